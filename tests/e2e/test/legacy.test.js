'use strict';
// subscriptions-transport-ws: the deprecated client (subprotocol `graphql-ws`) that older Apollo
// apps still ship with.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { SubscriptionClient } = require('subscriptions-transport-ws');
const h = require('../lib/harness');

let server;
let staff;
let admin;
const clients = [];

before(async () => {
  server = await h.startServer();
  staff = h.token('staff-1', 'staff');
  admin = h.token('admin-1', 'admin');
});

after(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

function legacyClient(connectionParams) {
  const client = new SubscriptionClient(server.wsUrl, { reconnect: false, lazy: false, connectionParams }, WebSocket);
  clients.push(client);
  return client;
}

function subscribe(client, query, variables) {
  const inbox = new h.Inbox('legacy subscription');
  const sub = client.request({ query, variables }).subscribe({
    next: (result) => inbox.push(result.errors ? { errors: result.errors } : { data: result.data }),
    // The client hands the observer the first error of the server's list.
    error: (error) => inbox.push({ errors: Array.isArray(error) ? error : [error] }),
    complete: () => inbox.push({ complete: true }),
  });
  inbox.stop = () => sub.unsubscribe();
  return inbox;
}

test('a subscription over the legacy protocol receives events', async () => {
  const { createOrder: order } = await h.ok(
    server,
    'mutation { createOrder(input: {customerId: "customer-5", total: "20.00"}) { id } }',
    {},
    staff,
  );
  const client = legacyClient({ authToken: h.token('customer-5') });
  const connected = new Promise((resolve) => client.onConnected(resolve));
  const events = subscribe(
    client,
    'subscription($id: ID!) { orderUpdated(orderId: $id) { orderId status changedFields order { id status } } }',
    { id: order.id },
  );
  await connected;
  assert.equal(client.client.protocol, 'graphql-ws', 'the server picked the legacy subprotocol');
  await h.waitForSubscriptions(server, 1, admin);

  for (const status of ['PROCESSING', 'SHIPPED']) {
    await h.ok(server, 'mutation($id: ID!, $s: OrderStatus!) { updateOrder(id: $id, input: {status: $s}) { id } }', { id: order.id, s: status }, staff);
    const { data } = await events.take((i) => i.data || i.errors, 5_000, `event for ${status}`);
    assert.ok(data, JSON.stringify(events.items));
    assert.deepEqual(data.orderUpdated, { orderId: order.id, status, changedFields: ['status'], order: { id: order.id, status } });
  }

  // Another customer's subscription to the same order is refused with a GraphQL error.
  const other = subscribe(legacyClient({ authToken: h.token('customer-6') }), 'subscription($id: ID!) { orderUpdated(orderId: $id) { orderId } }', { id: order.id });
  const { errors } = await other.take((i) => i.errors || i.data, 5_000, 'FORBIDDEN');
  assert.deepEqual(errors?.map((e) => e.extensions?.code), ['FORBIDDEN'], JSON.stringify(other.items));
  events.stop();
});
