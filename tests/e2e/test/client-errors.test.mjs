// Bad input through Switchboard's own client: a server error, a refused token, CURSOR_EXPIRED and a
// closed socket each reach the app as a typed error (SwitchboardError, or Apollo's and urql's own
// types through the link and the exchange) or event, on every client of the package, and never as
// an unhandled rejection (the process is watched for them throughout).

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { ApolloClient, InMemoryCache, HttpLink, CombinedGraphQLErrors, gql as apolloGql } from '@apollo/client';
import * as urql from '@urql/core';
import { SwitchboardError, createRoomsClient } from '@switchboard/client';
import { createClient } from '@switchboard/client/graphql-ws';
import { createClient as createSseClient } from '@switchboard/client/graphql-sse';
import { subscriptionsLink } from '@switchboard/client/apollo';
import { switchboardExchange } from '@switchboard/client/urql';
import h from '../lib/harness.js';
import { startProxy } from '../lib/proxy.js';

const ORDER = 'subscription($o: ID!, $after: String) { orderUpdated(orderId: $o, after: $after) { cursor sequence status } }';
const STOCK = 'subscription($p: ID, $after: String) { inventoryChanged(productId: $p, after: $after) { cursor sequence newQuantity } }';
const SET_STOCK = 'mutation($p: ID!, $q: Int!) { setInventory(productId: $p, quantity: $q) { id } }';
/** A cursor of another event log (another store's epoch). */
const FOREIGN = `${'0'.repeat(16)}.1`;

const unhandled = [];
const onUnhandled = (reason) => unhandled.push(reason);
before(() => process.on('unhandledRejection', onUnhandled));
after(() => {
  process.off('unhandledRejection', onUnhandled);
  assert.deepEqual(unhandled, [], 'no unhandled rejection, in any test of this file');
});

const cleanups = h.undoAfterEach(afterEach);

const staff = () => h.token('staff-1', 'staff');

/** A sink whose outcome is a promise: `{ results, error }` once it errors or completes. */
function outcome() {
  const results = [];
  let settle;
  const done = new Promise((resolve) => (settle = resolve));
  return {
    results,
    done,
    sink: {
      next: (r) => results.push(r),
      error: (error) => settle({ results, error }),
      complete: () => settle({ results, error: null }),
    },
  };
}

/** A Map as a cursor storage (the Web Storage interface). */
function memoryStorage(entries = {}) {
  const map = new Map(Object.entries(entries));
  return { map, getItem: (k) => map.get(k) ?? null, setItem: (k, v) => void map.set(k, v), removeItem: (k) => void map.delete(k) };
}

async function server0(env) {
  const server = await h.startServer({ env });
  cleanups.push(() => server.stop());
  return server;
}

function ws(server, bearer, options = {}) {
  const client = createClient({
    url: server.wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: () => (bearer ? { authorization: `Bearer ${bearer}` } : {}),
    backoff: { minDelay: 50, maxDelay: 200 },
    ...options,
  });
  cleanups.push(() => client.dispose());
  return client;
}

test('a server error: a typed error on the client, CombinedGraphQLErrors in Apollo, graphQLErrors in urql', async () => {
  const server = await server0();
  const customer = h.token('c-1');

  const client = ws(server, customer);
  const refused = outcome();
  client.subscribe({ query: ORDER, variables: { o: '999999' } }, refused.sink);
  const { error } = await refused.done;
  assert.ok(error instanceof SwitchboardError, `${error}`);
  assert.deepEqual([error.kind, error.code], ['graphql', 'NOT_FOUND']);
  assert.equal(error.errors[0].extensions.code, 'NOT_FOUND');

  const sse = createSseClient({ url: `${server.http}/graphql/stream`, headers: () => ({ authorization: `Bearer ${customer}` }) });
  cleanups.push(() => sse.dispose());
  const overSse = outcome();
  sse.subscribe({ query: ORDER, variables: { o: '999999' } }, overSse.sink);
  const sseError = (await overSse.done).error;
  assert.ok(SwitchboardError.is(sseError) && sseError.kind === 'graphql' && sseError.code === 'NOT_FOUND', `${sseError}`);

  const apollo = new ApolloClient({ cache: new InMemoryCache(), link: subscriptionsLink(client, new HttpLink({ uri: server.url })) });
  cleanups.push(() => apollo.stop());
  const apolloError = await new Promise((resolve) => {
    apollo.subscribe({ query: apolloGql(ORDER), variables: { o: '999999' } }).subscribe({
      next: (result) => result.error && resolve(result.error),
      error: resolve,
    });
  });
  assert.ok(CombinedGraphQLErrors.is(apolloError), `${apolloError}`);
  assert.equal(apolloError.errors[0].extensions.code, 'NOT_FOUND');

  const app = new urql.Client({ url: server.url, exchanges: [urql.fetchExchange, switchboardExchange(client)] });
  const urqlError = await new Promise((resolve) => {
    app.subscription(urql.gql(ORDER), { o: '999999' }).subscribe((result) => result.error && resolve(result.error));
  });
  assert.equal(urqlError.graphQLErrors[0].extensions.code, 'NOT_FOUND');
});

test('a refused token: graphql-ws (4403), SSE (401) and the room channel (401) each say so, typed', async () => {
  const server = await server0();
  const bad = h.signClaims({ sub: 'x', exp: Math.floor(Date.now() / 1000) - 600 });
  let asked = 0;

  // graphql-ws: connectionParams runs again for each retry (authRetries), then the app hears it.
  const client = ws(server, null, {
    authRetries: 1,
    connectionParams: () => {
      asked += 1;
      return { authorization: `Bearer ${bad}` };
    },
  });
  const viaWs = outcome();
  client.subscribe({ query: STOCK, variables: {} }, viaWs.sink);
  const wsError = (await viaWs.done).error;
  assert.deepEqual([wsError.kind, wsError.code, wsError.closeCode], ['auth', 'FORBIDDEN', 4403], `${wsError}`);
  assert.equal(asked, 2, 'a fresh token was asked for once more before giving up');

  const sse = createSseClient({ url: `${server.http}/graphql/stream`, authRetries: 1, retry: () => h.sleep(20), headers: () => ({ authorization: `Bearer ${bad}` }) });
  cleanups.push(() => sse.dispose());
  const viaSse = outcome();
  sse.subscribe({ query: STOCK, variables: {} }, viaSse.sink);
  const sseError = (await viaSse.done).error;
  assert.deepEqual([sseError.kind, sseError.code, sseError.status], ['auth', 'UNAUTHENTICATED', 401], `${sseError}`);

  // The room channel refuses before the upgrade; a fixed token is not tried again.
  const rooms = createRoomsClient({ url: `${server.ws}/ws`, token: bad, webSocketImpl: WebSocket });
  cleanups.push(() => rooms.close());
  const events = [];
  rooms.on('error', (e) => events.push(['error', e.kind, e.code, e.status]));
  rooms.on('status', (e) => events.push(['status', e.state]));
  const joined = rooms.join('lobby'); // not awaited at first: ignoring it must not be an unhandled rejection
  await h.eventually(() => rooms.state === 'closed', { what: 'the rooms client gives up' });
  assert.deepEqual(events.at(-2), ['error', 'auth', 'UNAUTHENTICATED', 401], JSON.stringify(events));
  assert.deepEqual(events.at(-1), ['status', 'closed']);
  await assert.rejects(joined, (e) => e.kind === 'auth' && e.code === 'UNAUTHENTICATED');
  await assert.rejects(rooms.join('lobby'), (e) => e.kind === 'client' && e.code === 'CLIENT_CLOSED');
});

test('CURSOR_EXPIRED from a kept cursor: started afresh, onReset and the reset event tell the app', async () => {
  const server = await server0();
  const product = (await h.ok(server, 'mutation { createProduct(input: {sku: "E-1", name: "E", price: "1.00"}) { id } }', {}, staff())).createProduct.id;

  // graphql-ws: a kept cursor from another store (storage, as after a reload against a new database).
  const resets = [];
  const storage = memoryStorage();
  const client = ws(server, staff(), { storage, onReset: (e) => resets.push([e.reason, e.error?.code]) });
  // Keys are the client's own: let it keep one, then swap in the foreign cursor.
  const probe = outcome();
  const stop = client.subscribe({ query: STOCK, variables: { p: product } }, probe.sink);
  await h.eventually(() => storage.map.size === 1, { what: 'the cursor kept' });
  const [storedKey] = storage.map.keys();
  stop();
  storage.map.set(storedKey, FOREIGN);
  const resumed = outcome();
  client.subscribe({ query: STOCK, variables: { p: product } }, resumed.sink);
  await h.eventually(() => resets.length === 1, { what: 'onReset' });
  assert.deepEqual(resets, [['CURSOR_EXPIRED', 'CURSOR_EXPIRED']]);
  await h.waitForSubscriptions(server, 1, h.token('admin-1', 'admin'));
  await h.ok(server, SET_STOCK, { p: product, q: 5 }, staff());
  await h.eventually(() => resumed.results.length === 1, { what: 'live after the reset' });
  assert.equal(resumed.results[0].data.inventoryChanged.newQuantity, 5);

  // The room channel: the same kept cursor for an entity room.
  const roomId = `product:${product}`;
  const rooms = createRoomsClient({
    url: `${server.ws}/ws`,
    token: staff(),
    webSocketImpl: WebSocket,
    storage: memoryStorage({ [`switchboard.cursor:room:${roomId}`]: FOREIGN }),
  });
  cleanups.push(() => rooms.close());
  const roomResets = [];
  rooms.on('reset', (e) => roomResets.push(e));
  const updates = [];
  rooms.on('update', (e) => updates.push(e.payload.newQuantity));
  await rooms.join(roomId);
  assert.deepEqual(roomResets, [{ roomId, reason: 'CURSOR_EXPIRED' }]);
  await h.ok(server, SET_STOCK, { p: product, q: 6 }, staff());
  await h.eventually(() => updates.length === 1, { what: 'the room live after the reset' });
  assert.deepEqual(updates, [6]);
});

test('a closed socket the client will not retry: a typed error, and a typed event on the room channel', async () => {
  const server = await server0();
  const proxy = await startProxy(server.port);
  cleanups.push(() => proxy.close());

  const client = createClient({ url: proxy.url(), webSocketImpl: WebSocket, retryAttempts: 0 });
  cleanups.push(() => client.dispose());
  const cut = outcome();
  client.subscribe({ query: STOCK, variables: {} }, cut.sink);
  await h.waitForSubscriptions(server, 1, h.token('admin-1', 'admin'));
  proxy.dropAll();
  const { error } = await cut.done;
  assert.deepEqual([error.kind, error.code, error.closeCode], ['closed', 'CONNECTION_CLOSED', 1006], `${error}`);

  const rooms = createRoomsClient({ url: `ws://127.0.0.1:${proxy.port}/ws`, token: staff(), webSocketImpl: WebSocket, maxAttempts: 0 });
  cleanups.push(() => rooms.close());
  const events = [];
  rooms.on('error', (e) => events.push(['error', e.kind, e.code, e.closeCode]));
  rooms.on('status', (e) => events.push(['status', e.state]));
  await rooms.join('lobby');
  proxy.dropAll();
  await h.eventually(() => rooms.state === 'closed', { what: 'the rooms client gives up' });
  assert.deepEqual(events.slice(-2), [['error', 'closed', 'CONNECTION_CLOSED', 1006], ['status', 'closed']], JSON.stringify(events));

  // Refusals of the room channel: a typed rejection of the join, and an `error` event.
  const more = createRoomsClient({ url: `${server.ws}/ws`, token: h.token('c-7'), webSocketImpl: WebSocket });
  cleanups.push(() => more.close());
  const refusals = [];
  more.on('error', (e) => refusals.push([e.kind, e.code, e.roomId]));
  await assert.rejects(more.join('not a room!'), (e) => e.kind === 'room' && e.code === 'BAD_REQUEST');
  await assert.rejects(more.join('user:someone-else'), (e) => e.kind === 'room' && e.code === 'FORBIDDEN' && e.roomId === 'user:someone-else');
  await assert.rejects(more.join('order:999999'), (e) => e.kind === 'room' && e.code === 'NOT_FOUND');
  more.join('user:someone-else'); // refused and ignored: no unhandled rejection
  await h.eventually(() => refusals.length === 3, { what: 'three refusals as events' });
  assert.deepEqual(refusals[0], ['room', 'FORBIDDEN', 'user:someone-else']);
  assert.deepEqual(await more.join('lobby').then((m) => m.map((x) => x.userId)), ['c-7'], 'and the client carries on');
});
