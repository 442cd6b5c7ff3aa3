'use strict';
// The HTTP limits as Node's own clients meet them: a refusal sent while the client is still
// uploading must reach it (not ECONNRESET), and ALLOWED_ORIGINS refuses a foreign page's
// WebSocket and CORS preflight.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const WebSocket = require('ws');
const h = require('../lib/harness');

const SHOP = 'https://shop.example';
const EVIL = 'https://evil.example';

let server;

before(async () => {
  server = await h.startServer({ env: { ALLOWED_ORIGINS: SHOP } });
});

after(async () => {
  await server?.stop();
});

/** A request with Node's `http` client, the body written in 64 KiB chunks; resolves `{ status, headers, body }`. */
function request({ method = 'POST', path = '/graphql', headers = {}, body = Buffer.alloc(0) }) {
  return new Promise((resolve, reject) => {
    const req = http.request(`${server.http}${path}`, { method, headers: { 'content-length': body.length, ...headers } });
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    let offset = 0;
    const writeMore = () => {
      while (offset < body.length) {
        const chunk = body.subarray(offset, offset + 65536);
        offset += chunk.length;
        if (!req.write(chunk)) return req.once('drain', writeMore);
      }
      req.end();
    };
    writeMore();
  });
}

test('a body over MAX_BODY_BYTES gets a readable 413 with a GraphQL error, not a reset', async () => {
  const body = Buffer.alloc(8 * 1024 * 1024, ' ');
  const res = await request({ headers: { 'content-type': 'application/json' }, body });
  assert.equal(res.status, 413);
  assert.match(res.headers['content-type'], /^application\/json/);
  assert.equal(JSON.parse(res.body).errors[0].extensions.code, 'PAYLOAD_TOO_LARGE');
});

test('a 1 MB header gets 431 on POST and GET', async () => {
  const big = 'a'.repeat(1024 * 1024);
  // A body, as uploads have: the client is still sending when the 431 comes.
  const body = Buffer.alloc(1024 * 1024, ' ');
  const post = await request({ headers: { 'content-type': 'application/json', 'x-big': big }, body });
  const get = await request({ method: 'GET', path: '/health', headers: { 'x-big': big } });
  assert.equal(post.status, 431);
  assert.equal(get.status, 431);
});

test('the server still answers normally afterwards', async () => {
  const { status, body } = await h.gql(server, '{ __typename }');
  assert.equal(status, 200);
  assert.equal(body.data.__typename, 'Query');
});

/** Opens a WebSocket to /graphql from `origin`; resolves the upgrade's status (101 when open). */
function upgradeStatus(origin) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(server.wsUrl, 'graphql-transport-ws', { origin });
    ws.on('open', () => {
      ws.close();
      resolve(101);
    });
    ws.on('unexpected-response', (_req, res) => resolve(res.statusCode));
    ws.on('error', reject);
  });
}

test('ALLOWED_ORIGINS: a WebSocket from a foreign page is refused, one from a listed page opens', async () => {
  assert.equal(await upgradeStatus(EVIL), 403);
  assert.equal(await upgradeStatus(SHOP), 101);
});

test('ALLOWED_ORIGINS: CORS preflights from a foreign page are refused, listed ones allowed', async () => {
  const preflight = (origin) =>
    fetch(server.url, {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });
  const refused = await preflight(EVIL);
  const allowed = await preflight(SHOP);
  assert.equal(refused.status, 403);
  assert.equal((await refused.json()).errors[0].extensions.code, 'FORBIDDEN');
  assert.ok(allowed.ok, `status ${allowed.status}`);
  assert.equal(allowed.headers.get('access-control-allow-origin'), SHOP);
});
