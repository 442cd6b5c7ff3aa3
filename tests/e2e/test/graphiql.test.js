'use strict';
// GraphiQL in a real browser: Debian's headless Chromium driven by playwright-core (no browser
// download). A newcomer opens GET /graphql of a `--demo` server, runs the pre-filled
// subscription with one click, sees an event arrive, then runs a query of their own.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');
const h = require('../lib/harness');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = path.join(__dirname, '..', 'artifacts');
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let server;
let browser;
let admin;

before(async () => {
  server = await h.startServer({ demo: true });
  admin = h.token('admin-1', 'admin');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  fs.mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const QUERY_EDITOR = '.graphiql-query-editor .CodeMirror';
// The editor tools pane holds Variables and Headers; the one shown is not `.hidden`.
const HEADERS_EDITOR = '.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror';
const RESULT = '.graphiql-response .CodeMirror';

/** The text of the CodeMirror editor matched by `selector`. */
const editorText = (page, selector) => page.$eval(selector, (el) => el.CodeMirror.getValue());
/**
 * Replaces the operation the way a person does: click, select all, type. (Setting CodeMirror's
 * value directly races GraphiQL's debounced parse of the operation name.)
 */
async function typeOperation(page, text) {
  await page.click(QUERY_EDITOR);
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Backspace');
  await page.keyboard.type(text);
  await page.waitForFunction(([sel, t]) => document.querySelector(sel).CodeMirror.getValue() === t, [QUERY_EDITOR, text]);
  await h.sleep(300); // GraphiQL re-reads the operation after a short debounce
}
/** Waits until the result pane's text contains `needle`. */
const resultContains = (page, needle, timeout = 10_000) =>
  page.waitForFunction(([sel, n]) => document.querySelector(sel)?.CodeMirror.getValue().includes(n), [RESULT, needle], { timeout });

test('GraphiQL: the demo subscription runs in one click, an event appears, then a query runs', async (t) => {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  t.after(() => context.close());
  const page = await context.newPage();
  const pageErrors = [];
  const foreign = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('request', (req) => {
    const url = new URL(req.url());
    if (!['127.0.0.1', 'localhost'].includes(url.hostname) && url.protocol !== 'data:') foreign.push(req.url());
  });

  const response = await page.goto(server.url, { waitUntil: 'load' });
  assert.equal(response.status(), 200);
  assert.match(response.headers()['content-type'], /text\/html/);
  await page.waitForSelector('.graphiql-container .graphiql-execute-button', { timeout: 15_000 });
  assert.equal(await page.title(), 'Switchboard · GraphiQL');

  // The pre-fill: a subscription in the editor and a staff token in the (open) Headers tab.
  const operation = await editorText(page, QUERY_EDITOR);
  assert.match(operation, /subscription Stock \{\s+inventoryChanged \{/);
  assert.match(operation, /second browser tab/, 'the comment says where to run the mutation');
  const headers = JSON.parse(await editorText(page, HEADERS_EDITOR));
  assert.match(headers.Authorization, /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
  const demoToken = headers.Authorization.slice('Bearer '.length);
  const me = await h.ok(server, '{ me { role } }', {}, demoToken);
  assert.equal(me.me.role, 'STAFF', 'the pre-filled token is a working staff token');

  // One click on Run starts the subscription over graphql-ws.
  const active = await h.activeSubscriptions(server, admin);
  await page.click('.graphiql-execute-button');
  await h.waitForSubscriptions(server, active + 1, admin, 10_000);

  // A mutation from elsewhere (as the comment in the pre-fill suggests), over HTTP.
  const { adjustInventory } = await h.ok(server, 'mutation { adjustInventory(productId: "1", delta: -1) { quantity } }', {}, admin);
  assert.equal(adjustInventory.quantity, 24);

  // The event appears in the result pane.
  await resultContains(page, '"newQuantity": 24');
  const event = JSON.parse(await editorText(page, RESULT));
  assert.deepEqual(event, {
    data: {
      inventoryChanged: { productId: '1', previousQuantity: 25, newQuantity: 24, product: { name: 'Mechanical keyboard' } },
    },
  });

  // What the pre-fill's comment tells a newcomer to do: run the mutation from a second GraphiQL
  // page. (A second tab inside GraphiQL would not do: GraphiQL runs one operation at a time, and
  // its Run button there stops the subscription.)
  const second = await context.newPage();
  await second.goto(server.url);
  await second.waitForSelector('.graphiql-container .graphiql-execute-button', { timeout: 15_000 });
  await typeOperation(second, 'mutation { adjustInventory(productId: "1", delta: -1) { quantity } }');
  await second.click('.graphiql-execute-button');
  await resultContains(second, '"quantity": 23');
  await resultContains(page, '"newQuantity": 23');
  assert.equal(JSON.parse(await editorText(page, RESULT)).data.inventoryChanged.previousQuantity, 24);
  await second.close();
  await page.screenshot({ path: path.join(ARTIFACTS, 'graphiql-subscription.png') });

  // Stop the subscription (the Run button toggles), then run a query typed into the editor.
  await page.click('.graphiql-execute-button');
  await h.eventually(async () => (await h.activeSubscriptions(server, admin)) === active, { what: 'the subscription ending' });
  await typeOperation(page, 'query Check { me { userId role } product(id: "1") { name quantity } }');
  await page.click('.graphiql-execute-button');
  await resultContains(page, '"quantity"');
  const result = JSON.parse(await editorText(page, RESULT));
  assert.equal(result.data.me.role, 'STAFF', 'the Headers tab token reached the HTTP request');
  assert.deepEqual(result.data.product, { name: 'Mechanical keyboard', quantity: 23 });
  await page.screenshot({ path: path.join(ARTIFACTS, 'graphiql-query.png') });

  assert.deepEqual(pageErrors, [], 'no script errors on the page');
  assert.deepEqual(foreign, [], 'GraphiQL loads nothing from outside the server');
});

test('GraphiQL: ?token= fills the Headers tab and a subscription error is shown to the user', async (t) => {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  t.after(() => context.close());
  const page = await context.newPage();
  const customer = h.token('customer-2', 'customer');
  await page.goto(`${server.url}?token=${customer}`);
  await page.waitForSelector('.graphiql-container .graphiql-execute-button', { timeout: 15_000 });
  const headers = JSON.parse(await editorText(page, HEADERS_EDITOR));
  assert.equal(headers.Authorization, `Bearer ${customer}`);

  // customer-2 does not own order 1: the subscription is refused, and GraphiQL shows why.
  await typeOperation(page, 'subscription { orderUpdated(orderId: "1") { orderId status } }');
  await page.click('.graphiql-execute-button');
  await resultContains(page, 'FORBIDDEN');
  await page.screenshot({ path: path.join(ARTIFACTS, 'graphiql-forbidden.png') });
});

// The standard introspection query (graphql-js 16, GraphiQL 3.9) nests 15 deep: a QUERY_MAX_DEPTH
// default below that leaves GraphiQL with "Error fetching schema" and no Docs.
test('GraphiQL: the schema loads, so Docs list the root types and the page opens without an error', async (t) => {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  t.after(() => context.close());
  const page = await context.newPage();
  const introspection = page.waitForResponse((r) => r.request().method() === 'POST' && /IntrospectionQuery/.test(r.request().postData() ?? ''));
  await page.goto(server.url);
  await page.waitForSelector('.graphiql-container .graphiql-execute-button', { timeout: 15_000 });
  const body = await (await introspection).json();
  assert.equal(body.errors, undefined, `introspection refused: ${JSON.stringify(body.errors)}`);
  assert.equal(body.data.__schema.queryType.name, 'Query');

  await page.click('button[aria-label="Show Documentation Explorer"]');
  await page.waitForFunction(() => /Root Types/.test(document.querySelector('.graphiql-plugin')?.innerText ?? ''), null, { timeout: 5_000 });
  const docs = await page.$eval('.graphiql-plugin', (el) => el.innerText);
  assert.match(docs, /subscription: Subscription/);
  assert.equal(await editorText(page, RESULT), '', 'the result pane is empty on a fresh page');
  await page.screenshot({ path: path.join(ARTIFACTS, 'graphiql-docs.png') });
});
