'use strict';
// urql (@urql/core) with its default exchanges and `subscriptionExchange` over a graphql-ws client,
// as urql's documentation sets it up. Queries use urql's default transport (GET within the URL
// limit, POST for mutations).

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const WebSocket = require('ws');
const { createClient: createWsClient } = require('graphql-ws');
const { Client, cacheExchange, fetchExchange, subscriptionExchange, gql } = require('@urql/core');
const h = require('../lib/harness');

const NOTIFICATION_CREATED = gql`
  subscription { notificationCreated { id userId title message } }
`;
const INVENTORY_CHANGED = gql`
  subscription Stock($id: ID) {
    inventoryChanged(productId: $id) { productId previousQuantity newQuantity product { id name quantity } }
  }
`;
const SEND_NOTIFICATION = `mutation($input: SendNotificationInput!) { sendNotification(input: $input) { id } }`;
const ADJUST = `mutation($id: ID!, $delta: Int!) { adjustInventory(productId: $id, delta: $delta) { quantity } }`;

let staff;
let admin;
const cleanups = [];

before(() => {
  staff = h.token('staff-1', 'staff');
  admin = h.token('admin-1', 'admin');
});

after(async () => {
  for (const fn of cleanups.reverse()) await fn();
});

/** An urql Client; `bearer` goes to fetchOptions and to graphql-ws connectionParams. */
function urqlClient(server, bearer, wsOptions = {}) {
  const stats = { connecting: 0, connected: 0, closeCodes: [] };
  const ws = createWsClient({
    url: server.wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: () => (bearer ? { authorization: `Bearer ${bearer}` } : {}),
    on: {
      connecting: () => stats.connecting++,
      connected: () => stats.connected++,
      closed: (event) => stats.closeCodes.push(event.code),
    },
    ...wsOptions,
  });
  const client = new Client({
    url: server.url,
    fetchOptions: () => ({ headers: bearer ? { authorization: `Bearer ${bearer}` } : {} }),
    exchanges: [
      cacheExchange,
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          const input = { ...request, query: request.query || '' };
          return {
            subscribe(sink) {
              const unsubscribe = ws.subscribe(input, sink);
              return { unsubscribe };
            },
          };
        },
      }),
    ],
  });
  cleanups.push(() => ws.dispose());
  return { client, ws, stats };
}

/** Subscribes through urql; the inbox gets `{ data }` or `{ error }` for each result. */
function subscribe(client, query, variables) {
  const inbox = new h.Inbox('urql subscription');
  const { unsubscribe } = client.subscription(query, variables).subscribe((result) => {
    inbox.push(result.error ? { error: result.error } : { data: result.data });
  });
  inbox.stop = unsubscribe;
  return inbox;
}

test('queries and subscriptions, with auth over HTTP and over graphql-ws', async () => {
  const server = await h.startServer({ demo: true });
  cleanups.push(() => server.stop());
  const customer = urqlClient(server, h.token('customer-1', 'customer', { name: 'Ada' }));
  const anonymous = urqlClient(server, null);

  // Queries (urql sends them as GET /graphql?query=...).
  const products = await customer.client.query(gql`{ products { id sku name price quantity } }`, {}).toPromise();
  assert.equal(products.error, undefined, String(products.error));
  assert.deepEqual(products.data.products.map((p) => p.sku), ['KB-001', 'MS-001', 'MN-027']);
  assert.equal(products.data.products[1].price, '49.99');

  const me = await customer.client.query(gql`{ me { userId role name } }`, {}).toPromise();
  assert.deepEqual(me.data.me, { __typename: 'Viewer', userId: 'customer-1', role: 'CUSTOMER', name: 'Ada' });
  const orders = await customer.client.query(gql`{ orders { id customerId } }`, {}).toPromise();
  assert.deepEqual(orders.data.orders.map((o) => o.customerId), ['customer-1', 'customer-1'], 'a customer sees only its orders');

  const anonMe = await anonymous.client.query(gql`{ me { userId } }`, {}).toPromise();
  assert.equal(anonMe.data.me, null);
  const anonOrders = await anonymous.client.query(gql`{ orders { id } }`, {}).toPromise();
  assert.deepEqual(anonOrders.error?.graphQLErrors.map((e) => e.extensions.code), ['UNAUTHENTICATED']);

  // Subscriptions: notificationCreated goes to the notified user only.
  const active = await h.activeSubscriptions(server, admin);
  const mine = subscribe(customer.client, NOTIFICATION_CREATED, {});
  const someoneElse = subscribe(urqlClient(server, h.token('customer-2')).client, NOTIFICATION_CREATED, {});
  await h.waitForSubscriptions(server, active + 2, admin);

  await h.ok(server, SEND_NOTIFICATION, { input: { userId: 'customer-1', type: 'info', title: 'Shipped', message: 'On its way' } }, staff);
  const { data } = await mine.take((i) => i.data || i.error, 5_000, 'notificationCreated');
  assert.ok(data, JSON.stringify(mine.items));
  assert.equal(data.notificationCreated.userId, 'customer-1');
  assert.equal(data.notificationCreated.title, 'Shipped');
  await h.sleep(300);
  assert.deepEqual(someoneElse.items, [], 'another user receives nothing');

  // Without a token the subscription is refused with UNAUTHENTICATED.
  const anon = subscribe(anonymous.client, NOTIFICATION_CREATED, {});
  const { error } = await anon.take((i) => i.error || i.data, 5_000, 'UNAUTHENTICATED');
  assert.deepEqual(error?.graphQLErrors.map((e) => e.extensions.code), ['UNAUTHENTICATED'], String(error));

  mine.stop();
  someoneElse.stop();
});

test('after a server restart, graphql-ws reconnects and the subscription resumes', async () => {
  const tmp = h.tempDir();
  cleanups.push(async () => tmp.cleanup());
  const databaseUrl = `sqlite://${path.join(tmp.dir, 'switchboard.db')}`;
  let server = await h.startServer({ databaseUrl });
  cleanups.push(() => server.stop());

  const { createProduct: product } = await h.ok(
    server,
    'mutation { createProduct(input: {sku: "RST-1", name: "Restart bolt", price: "1.00", quantity: 10}) { id } }',
    {},
    staff,
  );
  // The library's default retry policy: 5 attempts, randomised exponential backoff.
  const customer = urqlClient(server, h.token('customer-3'));
  const stock = subscribe(customer.client, INVENTORY_CHANGED, { id: product.id });
  await h.waitForSubscriptions(server, 1, admin);

  await h.ok(server, ADJUST, { id: product.id, delta: -1 }, staff);
  const first = await stock.take((i) => i.data || i.error, 5_000, 'event before the restart');
  assert.deepEqual(
    { prev: first.data?.inventoryChanged.previousQuantity, now: first.data?.inventoryChanged.newQuantity },
    { prev: 10, now: 9 },
  );

  // Restart on the same port with the same database file.
  const port = server.port;
  await server.stop();
  await h.eventually(() => customer.stats.closeCodes.length >= 1, { what: 'the client seeing the close' });
  assert.equal(customer.stats.closeCodes[0], 1001, 'shutdown closes with 1001 Going Away');
  server = await h.startServer({ databaseUrl, port });

  // graphql-ws reconnects by itself and re-sends the active subscription.
  await h.eventually(() => customer.stats.connected >= 2, { ms: 15_000, what: 'a second connection' });
  await h.waitForSubscriptions(server, 1, admin);
  await h.ok(server, ADJUST, { id: product.id, delta: -2 }, staff);
  const second = await stock.take((i) => i.data || i.error, 5_000, 'event after the restart');
  assert.deepEqual(
    { prev: second.data?.inventoryChanged.previousQuantity, now: second.data?.inventoryChanged.newQuantity },
    { prev: 9, now: 7 },
    'the stock survived the restart and the event reached the resumed subscription',
  );
  assert.equal(second.data.inventoryChanged.product.name, 'Restart bolt');
  assert.deepEqual(stock.items, [], 'no error or extra result on the way');
  stock.stop();
});
