// Resuming subscriptions with the clients users run, through Switchboard's own client
// (@switchboard/client): an Apollo Client 4 app on its link and an urql app on its exchange, both
// over its resuming graphql-ws client. The network drops every socket (once before any event has
// arrived, with a mutation landing meanwhile), the server closes a slow subscriber with 1013, the
// server is killed and restarted on a file database (once before the first event): each app sees
// every event exactly once, in order, and no app code touches a socket or a cursor.

import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import WebSocket from 'ws';
import { ApolloClient, InMemoryCache, HttpLink, gql as apolloGql } from '@apollo/client';
import * as urql from '@urql/core';
import { createClient } from '@switchboard/client/graphql-ws';
import { subscriptionsLink } from '@switchboard/client/apollo';
import { switchboardExchange } from '@switchboard/client/urql';
import h from '../lib/harness.js';
import { startProxy } from '../lib/proxy.js';

// Every subscription declares `$after: String`, passes it on and selects `cursor`; the client
// fills in `after` itself.
const INVENTORY = `subscription Stock($product: ID, $after: String) {
  inventoryChanged(productId: $product, after: $after) { cursor sequence productId previousQuantity newQuantity }
}`;
const ORDER_UPDATED = `subscription Order($order: ID!, $after: String) {
  orderUpdated(orderId: $order, after: $after) { cursor sequence orderId trackingNumber }
}`;
const ORDER_EVENTS = `subscription Orders($after: String) {
  orderEvents(after: $after) { cursor sequence kind order { id trackingNumber } }
}`;
const NOTIFICATIONS = `subscription Inbox($after: String) {
  notificationCreated(after: $after) { cursor sequence id title message }
}`;

const SET_STOCK = 'mutation($p: ID!, $q: Int!) { setInventory(productId: $p, quantity: $q) { quantity } }';
const TRACK = 'mutation($o: ID!, $t: String!) { updateOrder(id: $o, input: {trackingNumber: $t}) { id } }';
const CREATE_ORDER = 'mutation($c: ID!) { createOrder(input: {customerId: $c, total: "1.00"}) { id } }';
const NOTIFY = `mutation($u: ID!, $t: String!, $m: String!) {
  sendNotification(input: {userId: $u, type: "info", title: $t, message: $m}) { id }
}`;

/** Fast reconnections for the tests that drop sockets on purpose (the restart test keeps the defaults). */
const QUICK = { backoff: { minDelay: 50, maxDelay: 500 } };

const cleanups = h.undoAfterEach(afterEach);

const staff = () => h.token('staff-1', 'staff');
const admin = () => h.token('admin-1', 'admin');

/**
 * The library's graphql-ws client as an app makes it; `stats` counts what graphql-ws reports
 * (connections made, close codes) and the resets the library reports (`onReset`).
 */
function wsClient(url, bearer, options = {}, onReset = () => {}) {
  const stats = { connected: 0, closeCodes: [], resets: [] };
  const client = createClient({
    url,
    webSocketImpl: WebSocket,
    connectionParams: () => ({ authorization: `Bearer ${bearer}` }),
    on: {
      connected: () => stats.connected++,
      closed: (event) => stats.closeCodes.push(event.code),
    },
    onReset: (event) => {
      stats.resets.push(event.reason);
      return onReset(event);
    },
    ...options,
  });
  cleanups.push(() => client.dispose());
  return { client, stats };
}

/** An Apollo Client 4 app: HTTP for queries, the library's link for subscriptions. */
function apolloApp(server, wsUrl, bearer, options) {
  let apollo;
  const { client, stats } = wsClient(wsUrl, bearer, options, () => apollo.refetchQueries({ include: 'active' }));
  apollo = new ApolloClient({
    cache: new InMemoryCache(),
    link: subscriptionsLink(client, new HttpLink({ uri: server.url, headers: { authorization: `Bearer ${bearer}` } })),
  });
  cleanups.push(() => apollo.stop());
  /** Subscribes; returns the root field of every event, in arrival order, and any error. */
  const subscribe = (query, variables) => {
    const seen = { events: [], errors: [] };
    const sub = apollo.subscribe({ query: apolloGql(query), variables }).subscribe({
      next: (result) => (result.error ? seen.errors.push(result.error) : seen.events.push(rootField(result.data))),
      error: (error) => seen.errors.push(error),
    });
    cleanups.push(() => sub.unsubscribe());
    return seen;
  };
  return { apollo, stats, subscribe };
}

/** An urql app: default exchanges, and the library's exchange for subscriptions. */
function urqlApp(server, wsUrl, bearer, options, onReset) {
  let app;
  const { client, stats } = wsClient(wsUrl, bearer, options, (event) => onReset?.(app, event));
  app = new urql.Client({
    url: server.url,
    fetchOptions: () => ({ headers: { authorization: `Bearer ${bearer}` } }),
    exchanges: [urql.cacheExchange, urql.fetchExchange, switchboardExchange(client)],
  });
  const subscribe = (query, variables) => {
    const seen = { events: [], errors: [] };
    const { unsubscribe } = app.subscription(urql.gql(query), variables).subscribe((result) => {
      if (result.error) seen.errors.push(result.error);
      else seen.events.push(rootField(result.data));
    });
    cleanups.push(unsubscribe);
    return seen;
  };
  return { client: app, stats, subscribe };
}

/** The one root field of a subscription result, without the `__typename`s the clients add. */
function rootField(data) {
  return JSON.parse(JSON.stringify(Object.values(data)[0], (k, v) => (k === '__typename' ? undefined : v)));
}

/**
 * Waits until `seen` holds as many events as `expected`, then checks that they are exactly the
 * expected ones in the expected order: a duplicate shows as an event out of place, a gap as a
 * missing one (or a timeout naming what is missing).
 */
async function sawExactly(seen, expected, what, ms = 20_000) {
  const project = (e) => expected.project(e);
  try {
    await h.eventually(() => seen.events.length >= expected.list.length, { ms, what: `${what}: ${expected.list.length} events` });
  } catch (err) {
    assert.deepEqual(seen.events.map(project), expected.list, `${what}: ${err.message}`);
  }
  assert.deepEqual(seen.errors, [], `${what}: no error reaches the app`);
  assert.deepEqual(seen.events.map(project), expected.list, `${what}: every event exactly once, in order`);
}

/** Expected events, compared through `project` (the fields the test can predict). */
const expect = (project) => ({ list: [], project });

async function createProduct(server, sku) {
  const q = 'mutation($s: String!) { createProduct(input: {sku: $s, name: "Resumed", price: "1.00", quantity: 0}) { id } }';
  return (await h.ok(server, q, { s: sku }, staff())).createProduct.id;
}

async function createOrder(server, customer) {
  return (await h.ok(server, CREATE_ORDER, { c: customer }, staff())).createOrder.id;
}

test('every socket dropped, first before any event with mutations meanwhile: each app sees every event once, in order', async () => {
  const server = await h.startServer();
  cleanups.push(() => server.stop());
  const proxy = await startProxy(server.port);
  cleanups.push(() => proxy.close());
  const product = await createProduct(server, 'DROP-1');
  const order = await createOrder(server, 'customer-1');

  const apollo = apolloApp(server, proxy.url(), staff(), QUICK);
  const urqlA = urqlApp(server, proxy.url(), staff(), QUICK);
  const seen = {
    apolloStock: apollo.subscribe(INVENTORY, { product }),
    apolloOrder: apollo.subscribe(ORDER_UPDATED, { order }),
    urqlOrders: urqlA.subscribe(ORDER_EVENTS, {}),
    urqlStock: urqlA.subscribe(INVENTORY, { product }),
  };
  await h.waitForSubscriptions(server, 4, admin());

  const stock = expect((e) => [e.sequence, e.previousQuantity, e.newQuantity]);
  const tracking = expect((e) => [e.sequence, e.trackingNumber]);
  const orders = expect((e) => [e.kind, e.order.id, e.order.trackingNumber]);
  let orderSeq = 1; // createOrder was the order's first event
  const track = async (t) => {
    await h.ok(server, TRACK, { o: order, t }, staff());
    tracking.list.push([++orderSeq, t]);
    orders.list.push(['UPDATED', order, t]);
  };

  // Before any event: the sockets go, and changes land while the apps are away. Without a
  // position taken before the first event, these would be lost.
  const drops = [proxy.dropAll()];
  proxy.hold();
  await h.ok(server, SET_STOCK, { p: product, q: 0 }, staff());
  stock.list.push([1, 0, 0]);
  await track('T-0');
  proxy.release();

  const N = 200;
  for (let q = 1; q <= N; q++) {
    await h.ok(server, SET_STOCK, { p: product, q }, staff());
    stock.list.push([q + 1, q - 1, q]);
    if (q % 3 === 0) await track(`T-${q}`);
    if (q % 20 === 0) {
      const id = await createOrder(server, 'customer-2');
      orders.list.push(['CREATED', id, null]);
    }
    if (q % 50 === 0 && q < N) {
      // Both apps connected again since the last drop; between drops the stream goes on.
      await h.eventually(() => [apollo, urqlA].every((app) => app.stats.connected === drops.length + 1), {
        what: 'both apps connected again',
      });
      drops.push(proxy.dropAll());
    }
  }

  await sawExactly(seen.apolloStock, stock, 'Apollo inventoryChanged');
  await sawExactly(seen.urqlStock, stock, 'urql inventoryChanged');
  await sawExactly(seen.apolloOrder, tracking, 'Apollo orderUpdated');
  await sawExactly(seen.urqlOrders, orders, 'urql orderEvents');
  assert.deepEqual(drops, [2, 2, 2, 2], "each drop cut both apps' sockets");
  for (const [name, app] of [['Apollo', apollo], ['urql', urqlA]]) {
    assert.deepEqual(app.stats.closeCodes, [1006, 1006, 1006, 1006], `${name}: four abnormal closes`);
    assert.equal(app.stats.connected, 5, `${name}: reconnected after each drop`);
    assert.deepEqual(app.stats.resets, [], `${name}: nothing to refetch`);
  }
});

/** The server's count of deliveries refused because a subscriber's queue was full. */
async function laggedDeliveries(server) {
  const text = await (await fetch(`${server.http}/metrics`)).text();
  const m = text.match(/^switchboard_deliveries_lagged_total(?:\{[^}]*\})? (\d+)/m);
  return m ? Number(m[1]) : 0;
}

test('a subscriber closed with 1013 for being slow resumes and misses nothing', async () => {
  const server = await h.startServer({ env: { SUBSCRIBER_QUEUE: '4' } });
  cleanups.push(() => server.stop());
  const proxy = await startProxy(server.port);
  cleanups.push(() => proxy.close());
  const user = 'customer-13';
  const bearer = h.token(user);

  // The urql app's socket goes through the proxy, which will stop reading what the server sends;
  // the Apollo app, same user and subscription, is connected directly.
  const slow = urqlApp(server, proxy.url(), bearer, QUICK);
  const fast = apolloApp(server, server.wsUrl, bearer, QUICK);
  const slowSeen = slow.subscribe(NOTIFICATIONS, {});
  const fastSeen = fast.subscribe(NOTIFICATIONS, {});
  await h.waitForSubscriptions(server, 2, admin());

  const sent = expect((e) => [e.sequence, e.id]);
  const notify = async (title, message = 'm') => {
    const { sendNotification } = await h.ok(server, NOTIFY, { u: user, t: title, m: message }, staff());
    sent.list.push([sent.list.length + 1, sendNotification.id]);
  };
  await notify('first');
  await h.eventually(() => slowSeen.events.length === 1, { what: 'the first notification' });

  // Large events the slow socket cannot take: kernel buffers fill, the server's write blocks,
  // the subscriber's queue fills, and the server closes it (1013) instead of skipping events.
  proxy.pauseDownstream();
  const lagged = await laggedDeliveries(server);
  const big = 'x'.repeat(200_000);
  for (let i = 1; (await laggedDeliveries(server)) === lagged; i++) {
    assert.ok(i <= 300, 'the server never found the paused subscriber too slow');
    await notify(`big ${i}`, big);
  }
  proxy.resumeDownstream();
  await h.eventually(() => slow.stats.closeCodes.includes(1013), { ms: 10_000, what: 'a 1013 close' });
  for (let i = 1; i <= 3; i++) await notify(`after ${i}`);

  await sawExactly(slowSeen, sent, 'the slow urql app');
  await sawExactly(fastSeen, sent, 'the Apollo app beside it');
  assert.deepEqual(slow.stats.closeCodes, [1013], 'closed once, for being slow');
  assert.equal(slow.stats.connected, 2, 'and reconnected');
  assert.deepEqual(fast.stats.closeCodes, [], 'the other subscriber was not slowed down');
  assert.ok(sent.list.length > 8, `the test needed ${sent.list.length} notifications`);
});

test('the server killed before the first event, then stopped, and restarted on a file database mid-stream', async () => {
  const tmp = h.tempDir();
  cleanups.push(async () => tmp.cleanup());
  const databaseUrl = `sqlite://${path.join(tmp.dir, 'store.db')}`;
  let server = await h.startServer({ databaseUrl });
  cleanups.push(() => server.stop());
  const port = server.port;
  const product = await createProduct(server, 'RST-1');
  const order = await createOrder(server, 'customer-1');

  // The library's default reconnection policy (every failure retried, jittered waits up to 10 s).
  const apollo = apolloApp(server, server.wsUrl, staff());
  const urqlA = urqlApp(server, server.wsUrl, staff());
  const seen = {
    apolloStock: apollo.subscribe(INVENTORY, { product }),
    urqlOrder: urqlA.subscribe(ORDER_UPDATED, { order }),
    urqlOrders: urqlA.subscribe(ORDER_EVENTS, {}),
  };
  await h.waitForSubscriptions(server, 3, admin());

  const restart = async (signal) => {
    process.kill(server.pid, signal);
    await server.exited;
    server = await h.startServer({ databaseUrl, port });
  };
  const base = { url: server.url };
  const healthy = () =>
    h.eventually(() => fetch(`${server.http}/health`).then((r) => r.ok, () => false), { ms: 20_000, what: 'the server back' });
  let restarting = null;
  /** Runs a mutation until it has taken effect once; `done()` tells whether a lost answer's change landed. */
  const once = async (query, variables, done) => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await h.ok(base, query, variables, staff());
      } catch (err) {
        assert.ok(attempt < 20, `mutation kept failing: ${err.message}`);
        await restarting;
        await healthy();
        if (done && (await done())) return null;
      }
    }
  };
  const quantity = async () =>
    (await h.ok(base, 'query($p: ID!) { product(id: $p) { quantity } }', { p: product }, staff())).product.quantity;

  const stock = expect((e) => [e.sequence, e.previousQuantity, e.newQuantity]);
  const tracking = expect((e) => [e.sequence, e.trackingNumber]);
  const orders = expect((e) => [e.kind, e.order.id, e.order.trackingNumber]);
  let orderSeq = 1;

  // Killed before any event, and back at once: the first changes land while the apps are still
  // waiting to reconnect.
  await restart('SIGKILL');
  const N = 120;
  for (let q = 1; q <= N; q++) {
    // setInventory publishes even when the quantity does not change: retry only if it did not land.
    await once(SET_STOCK, { p: product, q }, async () => (await quantity()) === q);
    stock.list.push([q, q - 1, q]);
    if (q % 2 === 0) {
      // An update that changes nothing publishes nothing: retrying it is harmless.
      await once(TRACK, { o: order, t: `T-${q}` });
      tracking.list.push([++orderSeq, `T-${q}`]);
      orders.list.push(['UPDATED', order, `T-${q}`]);
    }
    if (q === 60) {
      await h.eventually(() => [apollo, urqlA].every((app) => app.stats.connected === 2), {
        ms: 20_000,
        what: 'both apps back after the first restart',
      });
      restarting = restart('SIGTERM');
    }
  }
  await restarting;

  await sawExactly(seen.apolloStock, stock, 'Apollo inventoryChanged', 40_000);
  await sawExactly(seen.urqlOrder, tracking, 'urql orderUpdated', 20_000);
  await sawExactly(seen.urqlOrders, orders, 'urql orderEvents', 20_000);
  for (const [name, app] of [['Apollo', apollo], ['urql', urqlA]]) {
    assert.equal(app.stats.connected, 3, `${name}: connected again after each restart`);
    assert.equal(app.stats.closeCodes[0], 1006, `${name}: SIGKILL drops the connection`);
    assert.ok(app.stats.closeCodes.includes(1001), `${name}: SIGTERM closes with 1001 (${app.stats.closeCodes})`);
    assert.deepEqual(app.stats.resets, [], `${name}: the cursors survived the restarts`);
  }
});

test('a cursor too far behind: CURSOR_EXPIRED, the client starts afresh and the app refetches', async () => {
  const server = await h.startServer({ env: { RESUME_MAX_EVENTS: '5' } });
  cleanups.push(() => server.stop());
  const proxy = await startProxy(server.port);
  cleanups.push(() => proxy.close());
  const product = await createProduct(server, 'EXP-1');
  const STOCK_QUERY = urql.gql`query($p: ID!) { product(id: $p) { id quantity } }`;

  // The app's refetch: what it shows (the product's stock) read again over HTTP.
  const refetched = [];
  const app = urqlApp(server, proxy.url(), staff(), QUICK, async (client, event) => {
    assert.equal(event.reason, 'CURSOR_EXPIRED');
    assert.equal(event.error.code, 'CURSOR_EXPIRED');
    const { data } = await client.query(STOCK_QUERY, { p: product }, { requestPolicy: 'network-only' }).toPromise();
    refetched.push(data.product.quantity);
  });
  const seenStock = app.subscribe(INVENTORY, { product });
  await h.waitForSubscriptions(server, 1, admin());
  await h.ok(server, SET_STOCK, { p: product, q: 1 }, staff());
  await h.eventually(() => seenStock.events.length === 1, { what: 'the first event' });

  // Away for more events than one resume may replay.
  proxy.hold();
  proxy.dropAll();
  for (let q = 2; q <= 8; q++) await h.ok(server, SET_STOCK, { p: product, q }, staff());
  proxy.release();

  await h.eventually(() => refetched.length === 1, { ms: 10_000, what: 'the refetch after CURSOR_EXPIRED' });
  assert.deepEqual(refetched, [8], 'the refetch reads the current stock');
  assert.deepEqual(app.stats.resets, ['CURSOR_EXPIRED']);
  await h.waitForSubscriptions(server, 1, admin());
  await h.ok(server, SET_STOCK, { p: product, q: 9 }, staff());
  const live = expect((e) => [e.sequence, e.newQuantity]);
  live.list.push([1, 1], [9, 9]);
  await sawExactly(seenStock, live, 'after the expired resume, from the server position on');
});
