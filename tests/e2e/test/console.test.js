'use strict';
// The operator console (/console) and the rooms demo (/demo/rooms) in a real browser: Debian's
// headless Chromium driven by playwright-core. The console follows a graphql-ws client as it
// subscribes and leaves, refuses a customer's and an expired token; the demo shows a second
// person's avatar and "… is typing", which the server clears by itself after 3 s, and the order's
// updates as the staff member changes it. Screenshots at 1280×800 and at phone width (390) go to
// artifacts/.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const WebSocket = require('ws');
const { createClient } = require('graphql-ws');
const { chromium } = require('playwright-core');
const h = require('../lib/harness');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = path.join(__dirname, '..', 'artifacts');
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

let browser;
before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  fs.mkdirSync(ARTIFACTS, { recursive: true });
});
after(async () => {
  await browser?.close();
});

/** A page that records script errors and any request leaving this machine. */
async function openPage(t, viewport = DESKTOP) {
  const context = await browser.newContext({ viewport });
  t.after(() => context.close());
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (err) => page.problems.push(`page error: ${err.message}`));
  page.on('response', (res) => {
    if (res.status() >= 400 && !res.url().endsWith('/favicon.ico')) page.problems.push(`${res.status()} ${res.url()}`);
  });
  page.on('request', (req) => {
    const url = new URL(req.url());
    if (!['127.0.0.1', 'localhost'].includes(url.hostname) && url.protocol !== 'data:') page.problems.push(`foreign: ${req.url()}`);
  });
  return page;
}

const shot = (page, name) => page.screenshot({ path: path.join(ARTIFACTS, name), fullPage: true });

/** Signs in to the console by typing `token` into the form, as an operator does. */
async function signIn(page, server, token) {
  await page.goto(`${server.http}/console`);
  await page.fill('#token', token);
  await page.click('#sign-in-form button[type=submit]');
}

/** The console's live count for a subscription field, as shown. */
const fieldCount = (page, field) => page.$eval(`#fields tr[data-field="${field}"] td.num`, (td) => td.textContent);

/** Milliseconds until the console shows `expected` for `field` (fails after `ms`). */
async function timeUntilShown(page, field, expected, ms) {
  const started = Date.now();
  await page.waitForFunction(([f, e]) => document.querySelector(`#fields tr[data-field="${f}"] td.num`)?.textContent === e,
    [field, expected], { timeout: ms, polling: 'raf' });
  return Date.now() - started;
}

test('console: a subscription appears and disappears within a second as a client subscribes and leaves', async (t) => {
  const server = await h.startServer();
  t.after(() => server.stop());
  const staff = h.token('ops-1', 'staff', { name: 'Olga Ops' });
  const order = (await h.ok(server, 'mutation { createOrder(input: {customerId: "c1", total: "12.50"}) { id } }', {}, staff)).createOrder.id;
  const page = await openPage(t);

  await signIn(page, server, staff);
  await page.waitForSelector('#console:not([hidden])');
  assert.equal(await fieldCount(page, 'orderUpdated'), '0');
  assert.ok(!page.url().includes(staff) && !page.url().includes('token'), `the token is not in the address: ${page.url()}`);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'nothing stored unless asked');

  const client = createClient({ url: server.wsUrl, webSocketImpl: WebSocket, lazy: false, retryAttempts: 0, connectionParams: { authorization: h.token('c1') } });
  const events = new h.Inbox('orderUpdated');
  const subscribedAt = Date.now();
  const stop = client.subscribe({ query: `subscription { orderUpdated(orderId: "${order}") { status } }` },
    { next: (v) => events.push(v), error: (e) => events.push({ error: e }), complete() {} });
  const appeared = await timeUntilShown(page, 'orderUpdated', '1', 3_000);
  t.diagnostic(`subscription shown ${Date.now() - subscribedAt} ms after subscribing`);
  assert.ok(Date.now() - subscribedAt <= 1_000, `shown after ${Date.now() - subscribedAt} ms (${appeared} ms of waiting)`);
  await page.waitForFunction(() => Number(document.querySelector('[data-total="subscriptions"]').textContent) >= 3);
  await shot(page, 'console-1280.png');

  // An event flows through: the live tail shows its topic and sequence.
  await h.ok(server, `mutation { updateOrder(id: "${order}", input: {status: SHIPPED}) { id } }`, {}, staff);
  await events.take((v) => v.data?.orderUpdated?.status === 'SHIPPED');
  await page.waitForSelector(`#tail tr[data-topic="order:${order}"]`);
  const row = await page.$eval(`#tail tr[data-topic="order:${order}"]`, (tr) => [...tr.cells].map((c) => c.textContent));
  assert.equal(row[2], '2', `order:${order} sequence 2 (created, then updated): ${row}`);

  const leftAt = Date.now();
  stop();
  await timeUntilShown(page, 'orderUpdated', '0', 3_000);
  assert.ok(Date.now() - leftAt <= 1_000, `gone after ${Date.now() - leftAt} ms`);
  await client.dispose();

  await page.setViewportSize(PHONE);
  await h.sleep(200);
  await shot(page, 'console-390.png');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `nothing wider than a phone's screen (${overflow} px too wide)`);
  assert.deepEqual(page.problems, []);
});

test('console: a customer token and an expired one are refused, and nothing is shown', async (t) => {
  const server = await h.startServer();
  t.after(() => server.stop());
  const page = await openPage(t);

  await signIn(page, server, h.token('c1', 'customer'));
  await page.waitForFunction(() => document.querySelector('#sign-in-error').textContent.length > 0);
  assert.match(await page.textContent('#sign-in-error'), /staff or admin/);
  assert.equal(await page.isHidden('#console'), true);
  assert.equal(await page.$$eval('#fields tr', (rows) => rows.length), 0, 'no figure reached the page');
  await shot(page, 'console-refused.png');

  const expired = h.signClaims({ sub: 'ops-1', role: 'staff', exp: Math.floor(Date.now() / 1000) - 120 });
  await signIn(page, server, expired);
  await page.waitForFunction(() => /expired/.test(document.querySelector('#sign-in-error').textContent));
  assert.equal(await page.isHidden('#console'), true);
  assert.deepEqual(page.problems, []);
});

test('rooms demo: a second person arrives, types, stops by itself after 3 s, updates the order and leaves', async (t) => {
  const server = await h.startServer({ demo: true });
  t.after(() => server.stop());
  const ana = await openPage(t);
  const sam = await openPage(t);

  // GraphiQL's page links to the demo.
  await ana.goto(server.url);
  await ana.click('a[href="/demo/rooms"]');
  await ana.waitForSelector('#people a');
  await shot(ana, 'demo-choose-1280.png');
  await ana.click('#people li:first-child a');
  await ana.waitForFunction(() => document.querySelector('#status').dataset.state === 'live');
  await ana.waitForSelector('#presence [data-user="customer-1"]');
  assert.equal(await ana.$$eval('#presence .member', (m) => m.length), 1);

  await sam.goto(`${server.http}/demo/rooms?as=staff`);
  await ana.waitForSelector('#presence [data-user="staff-2"]', { timeout: 5_000 });
  assert.match(await ana.textContent('#presence [data-user="staff-2"]'), /Sam Ortiz/);

  // Sam types; Ana sees it, and the server clears it 3 s after the last keystroke.
  await sam.waitForFunction(() => document.querySelector('#status').dataset.state === 'live');
  // One short burst: the page sends one `isTyping: true` (it repeats it at most once a second).
  await sam.type('#reply', 'Hi', { delay: 20 });
  await ana.waitForFunction(() => document.querySelector('#typing').textContent === 'Sam Ortiz is typing…', null, { timeout: 3_000, polling: 50 });
  const shown = Date.now();
  await shot(ana, 'demo-typing-1280.png');
  await ana.setViewportSize(PHONE);
  await h.sleep(200);
  await shot(ana, 'demo-typing-390.png');
  await ana.setViewportSize(DESKTOP);
  await ana.waitForFunction(() => document.querySelector('#typing').textContent === '', null, { timeout: 6_000, polling: 50 });
  const cleared = Date.now() - shown;
  t.diagnostic(`"is typing" cleared ${cleared} ms after it appeared`);
  assert.ok(cleared >= 2_500 && cleared <= 4_000, `cleared after ${cleared} ms`);
  assert.equal(await sam.inputValue('#reply'), 'Hi', 'Sam never stopped it himself');

  // Sam ships the order; Ana sees it change.
  await sam.selectOption('#status-select', 'SHIPPED');
  await sam.fill('#tracking', 'TRK-123');
  await sam.click('#staff-form button[type=submit]');
  await ana.waitForFunction(() => document.querySelector('[data-field="status"]').textContent === 'SHIPPED');
  assert.equal(await ana.textContent('[data-field="trackingNumber"]'), 'TRK-123');
  assert.match(await ana.textContent('#updates li'), /status → SHIPPED/);
  await shot(sam, 'demo-staff-1280.png');

  // The console (demo staff token, one click) sees both in the room.
  const consolePage = await openPage(t);
  await consolePage.goto(`${server.http}/console`);
  await consolePage.click('#use-demo');
  await consolePage.waitForSelector('#rooms .room [data-user="staff-2"]');
  await shot(consolePage, 'console-rooms-1280.png');

  // Sam closes his tab: his avatar goes.
  await sam.close();
  await ana.waitForSelector('#presence [data-user="staff-2"]', { state: 'detached', timeout: 5_000 });
  assert.deepEqual(ana.problems, []);
  assert.deepEqual(consolePage.problems, []);
});

test('the graphql-ws client the pages run is the npm package, byte for byte', () => {
  const vendored = { 'graphql-ws-client.js': 'client.js', 'common-CGW11Fyb.js': 'common-CGW11Fyb.js' };
  for (const [file, original] of Object.entries(vendored)) {
    const ours = fs.readFileSync(path.join(h.REPO, 'assets', 'vendor', file));
    const theirs = fs.readFileSync(path.join(__dirname, '..', 'node_modules', 'graphql-ws', 'dist', original));
    assert.ok(ours.equals(theirs), `assets/vendor/${file} is graphql-ws's dist/${original} (see assets/vendor/VERSIONS)`);
  }
  const version = require('graphql-ws/package.json').version;
  assert.match(fs.readFileSync(path.join(h.REPO, 'assets', 'vendor', 'VERSIONS'), 'utf8'), new RegExp(`graphql-ws\\s+${version.replace(/\./g, '\\.')}`));
});

/**
 * A page on the proxy's origin (so its requests reach the server through the proxy), made of
 * files this test serves: graphql-sse's ES modules from node_modules and a script that runs the
 * library's resuming SSE client, which the server itself serves at /console/lib/.
 */
const SSE_PAGE = {
  '/e2e/sse.html': ['text/html', '<!doctype html><meta charset="utf-8"><title>SSE</title><script type="module" src="/e2e/sse.js"></script>'],
  '/e2e/sse.js': ['text/javascript', `
    import { createClient } from '/e2e/graphql-sse/client.mjs';
    import { resumableGraphqlSse } from '/console/lib/index.js';
    const params = new URLSearchParams(location.search);
    window.events = [];
    window.problems = [];
    window.usedEventSource = typeof EventSource !== 'undefined';
    const client = resumableGraphqlSse(createClient, {
      url: '/graphql/stream',
      headers: () => ({ authorization: 'Bearer ' + params.get('token') }),
      backoff: { minDelay: 100, maxDelay: 500 },
    });
    client.subscribe(
      { query: 'subscription($p: ID, $after: String) { inventoryChanged(productId: $p, after: $after) { cursor sequence newQuantity } }', variables: { p: params.get('product') } },
      {
        next: (result) => window.events.push([result.data.inventoryChanged.sequence, result.data.inventoryChanged.newQuantity]),
        error: (error) => window.problems.push(error.kind + ' ' + error.code + ' ' + error.message),
        complete: () => window.problems.push('completed'),
      },
    );
  `],
};

test('browser: an SSE subscription without EventSource resumes after the server drops its stream', async (t) => {
  const { startProxy } = require('../lib/proxy');
  const server = await h.startServer();
  t.after(() => server.stop());
  const proxy = await startProxy(server.port);
  t.after(() => proxy.close());
  const staff = h.token('staff-1', 'staff');
  const admin = h.token('admin-1', 'admin');
  const product = (await h.ok(server, 'mutation { createProduct(input: {sku: "B-1", name: "B", price: "1.00"}) { id } }', {}, staff)).createProduct.id;
  const setStock = (q) => h.ok(server, 'mutation($p: ID!, $q: Int!) { setInventory(productId: $p, quantity: $q) { id } }', { p: product, q }, staff);

  const context = await browser.newContext();
  t.after(() => context.close());
  await context.addInitScript(() => {
    delete window.EventSource; // the library must not need it
  });
  const sseLib = path.join(__dirname, '..', 'node_modules', 'graphql-sse', 'lib');
  await context.route(/\/e2e\//, (route) => {
    const { pathname } = new URL(route.request().url());
    if (pathname.startsWith('/e2e/graphql-sse/')) {
      return route.fulfill({ path: path.join(sseLib, path.basename(pathname)), contentType: 'text/javascript' });
    }
    const [type, body] = SSE_PAGE[pathname] ?? [];
    return type ? route.fulfill({ contentType: type, body }) : route.fulfill({ status: 404 });
  });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  await page.goto(`http://127.0.0.1:${proxy.port}/e2e/sse.html?token=${staff}&product=${product}`);
  await h.waitForSubscriptions(server, 1, admin);

  // Dropped before its first event, with changes landing meanwhile; then again mid-stream.
  proxy.hold();
  proxy.dropAll();
  await setStock(1);
  await setStock(2);
  proxy.release();
  for (let q = 3; q <= 20; q++) {
    await setStock(q);
    if (q === 10) {
      await h.waitForSubscriptions(server, 1, admin);
      proxy.dropAll();
    }
  }
  await page.waitForFunction(() => window.events.length >= 20, null, { timeout: 20_000 });
  const seen = await page.evaluate(() => ({ events: window.events, problems: window.problems, usedEventSource: window.usedEventSource }));
  assert.deepEqual(seen.events, Array.from({ length: 20 }, (_, i) => [i + 1, i + 1]), 'every event once, in order');
  assert.deepEqual(seen.problems, []);
  assert.equal(seen.usedEventSource, false, 'EventSource was not there to use');
  assert.ok(proxy.stats.dropped >= 2, `the stream was dropped (${proxy.stats.dropped} connections)`);
  assert.deepEqual(errors, []);
});
