'use strict';
// GraphQL over Server-Sent Events at /graphql/stream with the clients users run: the graphql-sse
// library's own client in both of its modes, urql's subscriptionExchange over it, Apollo Client on
// Switchboard's link over Switchboard's resuming SSE client, and a browser's
// native EventSource (headless Chromium) that resumes by itself, with Last-Event-ID, after the
// network drops the stream.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { createClient } = require('graphql-sse');
const { Client, cacheExchange, fetchExchange, subscriptionExchange, gql } = require('@urql/core');
const { ApolloClient, InMemoryCache, gql: apolloGql } = require('@apollo/client');
const { chromium } = require('playwright-core');
const h = require('../lib/harness');
const { startProxy } = require('../lib/proxy');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking'];

const NOTIFICATIONS = 'subscription { notificationCreated { title } }';
const INVENTORY = 'subscription($id: ID) { inventoryChanged(productId: $id) { newQuantity } }';
const SEND_NOTIFICATION = `mutation($u: ID!, $t: String!) { sendNotification(input: {userId: $u, type: "info", title: $t, message: "m"}) { id } }`;
const SET_STOCK = `mutation($id: ID!, $q: Int!) { setInventory(productId: $id, quantity: $q) { quantity } }`;
const CREATE_PRODUCT = `mutation($sku: String!) { createProduct(input: {sku: $sku, name: $sku, price: "1.00", quantity: 0}) { id } }`;

let server;
let staff;
let admin;

before(async () => {
  server = await h.startServer();
  staff = h.token('staff-1', 'staff');
  admin = h.token('admin-1', 'admin');
});

after(async () => {
  await server?.stop();
});

const streamUrl = (base) => `${base}/graphql/stream`;

/** Collects a graphql-sse subscription's results; resolves `take(n)` once n have arrived. */
function collect(client, payload) {
  const results = [];
  const waiting = [];
  let failed = null;
  const dispose = client.subscribe(payload, {
    next: (value) => {
      results.push(value);
      waiting.filter((w) => results.length >= w.n).forEach((w) => w.resolve());
    },
    error: (err) => {
      failed = err;
    },
    complete: () => {},
  });
  return {
    results,
    dispose,
    take: (n) =>
      h.eventually(() => {
        if (failed) throw failed;
        return results.length >= n;
      }, { ms: 10_000, what: `${n} results` }),
  };
}

for (const singleConnection of [false, true]) {
  const mode = singleConnection ? 'single connection' : 'distinct connections';
  test(`graphql-sse client, ${mode} mode: subscriptions, queries and mutations`, async (t) => {
    const customer = h.token(`sse-${singleConnection}`, 'customer');
    const client = createClient({
      url: streamUrl(server.http),
      singleConnection,
      headers: () => ({ authorization: `Bearer ${customer}` }),
    });
    t.after(() => client.dispose());

    const before = await h.activeSubscriptions(server, admin);
    const sub = collect(client, { query: NOTIFICATIONS });
    await h.waitForSubscriptions(server, before + 1, admin);
    await h.ok(server, SEND_NOTIFICATION, { u: `sse-${singleConnection}`, t: 'one' }, staff);
    await h.ok(server, SEND_NOTIFICATION, { u: `sse-${singleConnection}`, t: 'two' }, staff);
    await sub.take(2);
    assert.deepEqual(
      sub.results.map((r) => r.data.notificationCreated.title),
      ['one', 'two'],
    );

    // A query and a refused mutation over the same transport.
    const me = [];
    await new Promise((resolve, reject) =>
      client.subscribe({ query: '{ me { userId role } }' }, { next: (v) => me.push(v), error: reject, complete: resolve }),
    );
    assert.deepEqual(me, [{ data: { me: { userId: `sse-${singleConnection}`, role: 'CUSTOMER' } } }]);
    const refused = [];
    await new Promise((resolve, reject) =>
      client.subscribe(
        { query: SET_STOCK, variables: { id: '1', q: 1 } },
        { next: (v) => refused.push(v), error: reject, complete: resolve },
      ),
    );
    assert.equal(refused[0].errors[0].extensions.code, 'FORBIDDEN');
    sub.dispose();
    await h.eventually(async () => (await h.activeSubscriptions(server, admin)) === before, { what: 'the subscription to stop' });
  });
}

test('graphql-sse client resumes a subscription after a drop when told the last cursor', async (t) => {
  const proxy = await startProxy(server.port);
  t.after(() => proxy.close());
  const product = (await h.ok(server, CREATE_PRODUCT, { sku: 'SSE-CLIENT' }, staff)).createProduct.id;
  // The app keeps the last cursor it saw and sends it as Last-Event-ID on every (re)connect.
  let lastCursor = null;
  const client = createClient({
    url: streamUrl(`http://127.0.0.1:${proxy.port}`),
    headers: () => (lastCursor ? { 'last-event-id': lastCursor } : {}),
    retry: () => h.sleep(200),
  });
  t.after(() => client.dispose());
  const quantities = [];
  const before = await h.activeSubscriptions(server, admin);
  const dispose = client.subscribe(
    { query: 'subscription($id: ID) { inventoryChanged(productId: $id) { newQuantity cursor } }', variables: { id: product } },
    {
      next: ({ data }) => {
        quantities.push(data.inventoryChanged.newQuantity);
        lastCursor = data.inventoryChanged.cursor;
      },
      error: (err) => assert.fail(err),
      complete: () => {},
    },
  );
  t.after(dispose);
  await h.waitForSubscriptions(server, before + 1, admin);
  for (let q = 1; q <= 3; q++) await h.ok(server, SET_STOCK, { id: product, q }, staff);
  await h.eventually(() => quantities.length === 3, { what: 'three events' });
  proxy.dropAll();
  for (let q = 4; q <= 6; q++) await h.ok(server, SET_STOCK, { id: product, q }, staff);
  await h.eventually(() => quantities.length >= 6, { ms: 10_000, what: 'the events sent during the drop' });
  for (let q = 7; q <= 8; q++) await h.ok(server, SET_STOCK, { id: product, q }, staff);
  await h.eventually(() => quantities.length >= 8, { what: 'live events after the resume' });
  assert.deepEqual(quantities, [1, 2, 3, 4, 5, 6, 7, 8]);
});

test('urql over graphql-sse: subscriptions through subscriptionExchange', async (t) => {
  const customer = h.token('sse-urql', 'customer');
  const sse = createClient({ url: streamUrl(server.http), headers: { authorization: `Bearer ${customer}` } });
  t.after(() => sse.dispose());
  const client = new Client({
    url: server.url,
    fetchOptions: { headers: { authorization: `Bearer ${customer}` } },
    exchanges: [
      cacheExchange,
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          return { subscribe: (sink) => ({ unsubscribe: sse.subscribe(request, sink) }) };
        },
      }),
    ],
  });
  const titles = [];
  const before = await h.activeSubscriptions(server, admin);
  const { unsubscribe } = client
    .subscription(gql(NOTIFICATIONS), {})
    .subscribe((result) => titles.push(result.data?.notificationCreated.title ?? JSON.stringify(result.error)));
  t.after(unsubscribe);
  await h.waitForSubscriptions(server, before + 1, admin);
  await h.ok(server, SEND_NOTIFICATION, { u: 'sse-urql', t: 'via urql' }, staff);
  await h.eventually(() => titles.length === 1, { what: 'the urql event' });
  assert.deepEqual(titles, ['via urql']);
});

test("Apollo Client over graphql-sse: Switchboard's link (the README's) serves a query and a subscription", async (t) => {
  const { SwitchboardLink } = await import('@switchboard/client/apollo');
  const { createClient: createResumingClient } = await import('@switchboard/client/graphql-sse');
  const customer = h.token('sse-apollo', 'customer');
  const sse = createResumingClient({ url: streamUrl(server.http), headers: { authorization: `Bearer ${customer}` } });
  t.after(() => sse.dispose());
  const apollo = new ApolloClient({ link: new SwitchboardLink(sse), cache: new InMemoryCache() });
  const { data } = await apollo.query({ query: apolloGql`{ me { userId } }` });
  assert.equal(data.me.userId, 'sse-apollo');
  const titles = [];
  const before = await h.activeSubscriptions(server, admin);
  const subscription = apollo
    .subscribe({ query: apolloGql(NOTIFICATIONS) })
    .subscribe({ next: ({ data }) => titles.push(data.notificationCreated.title) });
  t.after(() => subscription.unsubscribe());
  await h.waitForSubscriptions(server, before + 1, admin);
  await h.ok(server, SEND_NOTIFICATION, { u: 'sse-apollo', t: 'via apollo' }, staff);
  await h.eventually(() => titles.length === 1, { what: 'the Apollo event' });
  assert.deepEqual(titles, ['via apollo']);
});

test('a browser EventSource resumes by itself after the server side drops it: no gap, no duplicate', async (t) => {
  const proxy = await startProxy(server.port);
  t.after(() => proxy.close());
  const product = (await h.ok(server, CREATE_PRODUCT, { sku: 'SSE-BROWSER' }, staff)).createProduct.id;
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  t.after(() => browser.close());
  const page = await browser.newPage();
  const origin = `http://127.0.0.1:${proxy.port}`;
  await page.goto(`${origin}/health`);

  // EventSource cannot set headers: the identity goes in ?access_token=. The query selects no
  // cursor: the event's id is its cursor all the same, and the browser sends it back.
  const customer = h.token('sse-browser', 'customer');
  const params = new URLSearchParams({ query: INVENTORY, variables: JSON.stringify({ id: product }), access_token: customer });
  const before = await h.activeSubscriptions(server, admin);
  await page.evaluate((url) => {
    window.events = [];
    window.errors = 0;
    const source = new EventSource(url);
    source.addEventListener('next', (e) => window.events.push({ id: e.lastEventId, data: JSON.parse(e.data) }));
    source.addEventListener('error', () => window.errors++);
  }, `${origin}/graphql/stream?${params}`);
  await h.waitForSubscriptions(server, before + 1, admin);
  for (let q = 1; q <= 5; q++) await h.ok(server, SET_STOCK, { id: product, q }, staff);
  await page.waitForFunction(() => window.events.length === 5, null, { timeout: 10_000 });

  assert.ok(proxy.dropAll() >= 1, 'the stream was cut');
  for (let q = 6; q <= 10; q++) await h.ok(server, SET_STOCK, { id: product, q }, staff);
  await page.waitForFunction(() => window.events.length >= 10, null, { timeout: 15_000 });
  for (let q = 11; q <= 12; q++) await h.ok(server, SET_STOCK, { id: product, q }, staff);
  await page.waitForFunction(() => window.events.length >= 12, null, { timeout: 10_000 });

  const events = await page.evaluate(() => window.events);
  assert.deepEqual(
    events.map((e) => e.data.data.inventoryChanged.newQuantity),
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
  );
  assert.ok(events.every((e) => /^[0-9a-f]{16}\.\d+$/.test(e.id)), 'every event carries its cursor as its id');
  assert.equal(new Set(events.map((e) => e.id)).size, 12, 'no duplicate');
  assert.ok((await page.evaluate(() => window.errors)) >= 1, 'the browser saw the drop and reconnected');
  // The page and the first stream may share one keep-alive connection; the resume needs another.
  assert.ok(proxy.stats.accepted >= 2, 'a new connection resumed the stream');
});
