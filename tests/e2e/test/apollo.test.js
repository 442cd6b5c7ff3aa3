'use strict';
// Apollo Client 4, wired the way its documentation tells users to: an HttpLink for queries and
// mutations and a GraphQLWsLink (graphql-ws) for subscriptions, joined with `split`.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { createClient } = require('graphql-ws');
const { ApolloClient, InMemoryCache, HttpLink, split, gql, ServerError } = require('@apollo/client');
const { GraphQLWsLink } = require('@apollo/client/link/subscriptions');
const { getMainDefinition } = require('@apollo/client/utilities');
const h = require('../lib/harness');

// GraphQLWsLink checks errors against the global `WebSocket` (a browser's); Node 20 has none.
globalThis.WebSocket ??= WebSocket;

const ORDER = gql`
  query Order($id: ID!) {
    order(id: $id) { id orderNumber status total }
  }
`;
const CREATE_ORDER = gql`
  mutation CreateOrder($input: CreateOrderInput!) {
    createOrder(input: $input) { id orderNumber customerId status paymentStatus total currency }
  }
`;
const UPDATE_ORDER = gql`
  mutation UpdateOrder($id: ID!, $input: UpdateOrderInput!) {
    updateOrder(id: $id, input: $input) { id status }
  }
`;
const ORDER_UPDATED = gql`
  subscription OrderUpdated($id: ID!) {
    orderUpdated(orderId: $id) { orderId changedFields order { id status } }
  }
`;
const ORDER_FIELDS = gql`
  fragment OrderStatus on Order { id status }
`;

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
  for (const c of clients) {
    c.apollo.stop();
    await c.ws.dispose();
  }
  await server?.stop();
});

/**
 * An Apollo Client as an app would build it. `bearer` goes to the HTTP `Authorization` header and
 * to graphql-ws `connectionParams`. Counts HTTP requests and WebSocket connection attempts.
 */
function apolloClient(bearer, wsOptions = {}) {
  const stats = { httpRequests: 0, wsConnecting: 0, wsCloseCodes: [] };
  const httpLink = new HttpLink({
    uri: server.url,
    headers: bearer ? { authorization: `Bearer ${bearer}` } : {},
    fetch: (...args) => {
      stats.httpRequests++;
      return fetch(...args);
    },
  });
  const ws = createClient({
    url: server.wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: () => (bearer ? { authorization: `Bearer ${bearer}` } : {}),
    on: {
      connecting: () => stats.wsConnecting++,
      closed: (event) => stats.wsCloseCodes.push(event.code),
    },
    ...wsOptions,
  });
  const link = split(
    ({ query }) => {
      const definition = getMainDefinition(query);
      return definition.kind === 'OperationDefinition' && definition.operation === 'subscription';
    },
    new GraphQLWsLink(ws),
    httpLink,
  );
  const apollo = new ApolloClient({ link, cache: new InMemoryCache() });
  const c = { apollo, ws, stats };
  clients.push(c);
  return c;
}

/** Subscribes through Apollo; the inbox gets `{ result }` for each emission and `{ error }`. */
function subscribe(apollo, query, variables) {
  const inbox = new h.Inbox('apollo subscription');
  const sub = apollo.subscribe({ query, variables }).subscribe({
    next: (result) => inbox.push(result.error ? { error: result.error } : { result }),
    error: (error) => inbox.push({ error }),
    complete: () => inbox.push({ complete: true }),
  });
  inbox.stop = () => sub.unsubscribe();
  return inbox;
}

test('query, mutation and a subscription whose payload updates the normalized cache', async () => {
  const staffClient = apolloClient(staff);
  const customer = apolloClient(h.token('customer-7', 'customer'));

  // Mutation over HTTP: staff creates an order for customer-7.
  const { data: created } = await staffClient.apollo.mutate({
    mutation: CREATE_ORDER,
    variables: { input: { customerId: 'customer-7', total: '12.50' } },
  });
  const order = created.createOrder;
  assert.equal(order.__typename, 'Order');
  assert.equal(order.customerId, 'customer-7');
  assert.equal(order.status, 'PENDING');
  assert.equal(order.total, '12.50', 'a Decimal keeps its scale');

  // Query over HTTP with the customer's token: the order lands in the customer's cache.
  const { data } = await customer.apollo.query({ query: ORDER, variables: { id: order.id } });
  assert.deepEqual(data.order, { __typename: 'Order', id: order.id, orderNumber: order.orderNumber, status: 'PENDING', total: '12.50' });
  const orderRef = customer.apollo.cache.identify({ __typename: 'Order', id: order.id });
  assert.equal(orderRef, `Order:${order.id}`);

  // A watched query, as a component would hold it: it must re-render from the cache.
  const watched = new h.Inbox('watched order');
  const watch = customer.apollo
    .watchQuery({ query: ORDER, variables: { id: order.id }, fetchPolicy: 'cache-first' })
    .subscribe({ next: (r) => r.data?.order && watched.push(r.data.order.status) });
  await watched.take((s) => s === 'PENDING');

  // Subscription over graphql-ws, authenticated only by connectionParams.
  const active = await h.activeSubscriptions(server, admin);
  const events = subscribe(customer.apollo, ORDER_UPDATED, { id: order.id });
  await h.waitForSubscriptions(server, active + 1, admin);
  const httpBefore = customer.stats.httpRequests;

  // The status changes through another client (so the customer's cache learns it only from the event).
  await staffClient.apollo.mutate({ mutation: UPDATE_ORDER, variables: { id: order.id, input: { status: 'SHIPPED' } } });

  const { result } = await events.take((i) => i.result || i.error, 5_000, 'orderUpdated event');
  assert.ok(result, `expected an event, got ${JSON.stringify(events.items)}`);
  assert.equal(result.data.orderUpdated.orderId, order.id);
  assert.deepEqual(result.data.orderUpdated.changedFields, ['status']);
  assert.deepEqual(result.data.orderUpdated.order, { __typename: 'Order', id: order.id, status: 'SHIPPED' });

  // The cache entry for the order now says SHIPPED, the watcher re-rendered, and nothing was refetched.
  const cached = customer.apollo.readFragment({ id: orderRef, fragment: ORDER_FIELDS });
  assert.equal(cached.status, 'SHIPPED');
  assert.equal(customer.apollo.readQuery({ query: ORDER, variables: { id: order.id } }).order.status, 'SHIPPED');
  await watched.take((s) => s === 'SHIPPED', 2_000, 'watched query re-render with SHIPPED');
  assert.equal(customer.stats.httpRequests, httpBefore, 'no HTTP refetch after the event');
  assert.equal(customer.stats.wsConnecting, 1, 'one WebSocket connection');

  events.stop();
  watch.unsubscribe();
});

test('subscription authorization travels in connectionParams', async () => {
  const { data } = await apolloClient(staff).apollo.mutate({
    mutation: CREATE_ORDER,
    variables: { input: { customerId: 'customer-8', total: '3.00' } },
  });
  const id = data.createOrder.id;

  // Another customer is refused with FORBIDDEN, an anonymous client with UNAUTHENTICATED:
  // the server tells them apart only by what connectionParams carried.
  const other = subscribe(apolloClient(h.token('customer-9')).apollo, ORDER_UPDATED, { id });
  const { error: forbidden } = await other.take((i) => i.error || i.result, 5_000, 'FORBIDDEN error');
  assert.ok(forbidden, 'a customer subscribing to another customer\'s order gets an error');
  assert.deepEqual(forbidden.errors?.map((e) => e.extensions?.code), ['FORBIDDEN'], String(forbidden));

  const anonymous = subscribe(apolloClient(null).apollo, ORDER_UPDATED, { id });
  const { error: unauthenticated } = await anonymous.take((i) => i.error || i.result, 5_000, 'UNAUTHENTICATED error');
  assert.deepEqual(unauthenticated.errors?.map((e) => e.extensions?.code), ['UNAUTHENTICATED'], String(unauthenticated));

  // The owner is let in: an event reaches it.
  const active = await h.activeSubscriptions(server, admin);
  const owner = subscribe(apolloClient(h.token('customer-8')).apollo, ORDER_UPDATED, { id });
  await h.waitForSubscriptions(server, active + 1, admin);
  await h.ok(server, 'mutation($id: ID!) { updateOrder(id: $id, input: {status: PROCESSING}) { id } }', { id }, staff);
  const { result } = await owner.take((i) => i.result || i.error, 5_000, 'event for the owner');
  assert.equal(result?.data.orderUpdated.order.status, 'PROCESSING');
  owner.stop();
});

test('a refused token surfaces as an error, and the client stops after a bounded number of retries', async () => {
  const retryAttempts = 2;
  const bad = apolloClient('not-a-jwt', { retryAttempts, retryWait: () => h.sleep(50) });

  // Over HTTP: the query fails with the server's 401.
  await assert.rejects(
    bad.apollo.query({ query: ORDER, variables: { id: '1' } }),
    (err) => err instanceof ServerError && err.statusCode === 401,
  );

  // Over WebSocket: every attempt is closed with 4403, then the error reaches the subscriber.
  const events = subscribe(bad.apollo, ORDER_UPDATED, { id: '1' });
  const { error } = await events.take((i) => i.error || i.result, 10_000, 'connection error');
  assert.ok(error, `expected an error, got ${JSON.stringify(events.items)}`);
  assert.match(String(error.message), /4403/, 'the error names the Forbidden close');
  assert.equal(bad.stats.wsConnecting, retryAttempts + 1, 'one first try plus the configured retries');
  assert.deepEqual(bad.stats.wsCloseCodes, Array(retryAttempts + 1).fill(4403));

  // And it stays given up: no further connection attempts.
  await h.sleep(500);
  assert.equal(bad.stats.wsConnecting, retryAttempts + 1, 'no connection attempts after giving up');
});
