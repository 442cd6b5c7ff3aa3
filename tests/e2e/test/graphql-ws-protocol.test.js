'use strict';
// The edges of the graphql-transport-ws protocol, seen through graphql-ws's own `createClient`
// (the client inside Apollo's GraphQLWsLink and urql's usual setup) and, where the client cannot
// misbehave on purpose, through a raw `ws` socket.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { createClient } = require('graphql-ws');
const h = require('../lib/harness');

const NOTIFICATIONS = 'subscription { notificationCreated { id userId title } }';
const SEND_NOTIFICATION = 'mutation($u: ID!, $t: String!) { sendNotification(input: {userId: $u, type: "info", title: $t, message: "m"}) { id } }';

let server; // default settings: init timeout 3 s, heartbeat 30 s
let staff;
let admin;
const disposers = [];

before(async () => {
  server = await h.startServer();
  staff = h.token('staff-1', 'staff');
  admin = h.token('admin-1', 'admin');
});

after(async () => {
  for (const dispose of disposers) await dispose();
  await server?.stop();
});

/** A graphql-ws client that records what happens on its sockets. */
function client(options, target = server) {
  const log = { connecting: 0, connected: 0, closes: [], pings: [], pongs: [] };
  const c = createClient({
    url: target.wsUrl,
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    retryWait: () => h.sleep(50),
    ...options,
    on: {
      connecting: () => log.connecting++,
      connected: () => log.connected++,
      closed: (event) => log.closes.push({ code: event.code, reason: event.reason }),
      ping: (received, payload) => log.pings.push({ received, payload }),
      pong: (received, payload) => log.pongs.push({ received, payload }),
    },
  });
  c.log = log;
  disposers.push(() => c.dispose());
  return c;
}

function subscribe(c, query, variables = {}) {
  const inbox = new h.Inbox('graphql-ws subscription');
  inbox.stop = c.subscribe({ query, variables }, {
    next: (value) => inbox.push({ next: value }),
    error: (error) => inbox.push({ error }),
    complete: () => inbox.push({ complete: true }),
  });
  return inbox;
}

/** A raw graphql-transport-ws socket: `{ ws, inbox, send(msg), closed }`. */
function rawSocket(target = server, wsOptions = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(target.wsUrl, 'graphql-transport-ws', wsOptions);
    const inbox = new h.Inbox('raw socket');
    const closed = new Promise((r) => ws.on('close', (code, reason) => r({ code, reason: reason.toString(), at: Date.now() })));
    ws.on('message', (data) => inbox.push(JSON.parse(data.toString())));
    ws.on('error', reject);
    ws.on('open', () => resolve({ ws, inbox, closed, openedAt: Date.now(), send: (m) => ws.send(JSON.stringify(m)) }));
    disposers.push(() => ws.terminate());
  });
}

const withTimeout = (promise, ms, what) =>
  Promise.race([promise, h.sleep(ms).then(() => { throw new Error(`${what}: nothing within ${ms} ms`); })]);

test('no connection_init within the default 3 s: closed with 4408; the client retries and gets in', async () => {
  // The first connectionParams call takes longer than the server waits for connection_init; the
  // retry that 4408 implies calls it again, and this time it answers at once.
  let calls = 0;
  const c = client({
    retryAttempts: 2,
    connectionParams: async () => {
      calls++;
      if (calls === 1) await h.sleep(4_500);
      return { authorization: `Bearer ${h.token('customer-1')}` };
    },
  });
  const active = await h.activeSubscriptions(server, admin);
  const started = Date.now();
  const events = subscribe(c, NOTIFICATIONS);
  await h.eventually(() => c.log.closes.length >= 1, { ms: 6_000, what: 'the init-timeout close' });
  const waited = Date.now() - started;
  assert.deepEqual(c.log.closes[0], { code: 4408, reason: 'Connection initialisation timeout' });
  assert.ok(waited >= 2_500 && waited < 4_500, `closed after ${waited} ms; expected about 3 s`);

  await h.eventually(() => c.log.connected === 1, { ms: 3_000, what: 'a connection on retry' });
  assert.equal(calls, 2, 'connectionParams re-run on retry');
  await h.waitForSubscriptions(server, active + 1, admin);
  await h.ok(server, SEND_NOTIFICATION, { u: 'customer-1', t: 'after retry' }, staff);
  const { next } = await events.take((i) => i.next || i.error, 5_000, 'event after the retry');
  assert.equal(next?.data.notificationCreated.title, 'after retry');
  events.stop();
});

test('a raw socket that never sends connection_init is closed 4408 after about 3 s, not before', async () => {
  const s = await rawSocket();
  const { code, reason, at } = await withTimeout(s.closed, 6_000, 'init timeout close');
  assert.equal(code, 4408);
  assert.equal(reason, 'Connection initialisation timeout');
  const waited = at - s.openedAt;
  assert.ok(waited >= 2_500, `closed after only ${waited} ms`);
});

test('4403 on a bad token; the retry re-runs connectionParams and a good token gets in', async () => {
  const tokens = ['not-a-jwt', h.token('customer-2')];
  let calls = 0;
  const c = client({
    retryAttempts: 3,
    connectionParams: () => ({ authorization: `Bearer ${tokens[Math.min(calls++, tokens.length - 1)]}` }),
  });
  const active = await h.activeSubscriptions(server, admin);
  const events = subscribe(c, NOTIFICATIONS);
  await h.eventually(() => c.log.connected === 1, { ms: 5_000, what: 'a connection on retry' });
  assert.equal(c.log.closes[0]?.code, 4403, JSON.stringify(c.log.closes));
  assert.match(c.log.closes[0].reason, /^Forbidden/);
  assert.equal(c.log.connecting, 2);
  assert.equal(calls, 2);

  await h.waitForSubscriptions(server, active + 1, admin);
  await h.ok(server, SEND_NOTIFICATION, { u: 'customer-2', t: 'welcome back' }, staff);
  const { next } = await events.take((i) => i.next || i.error, 5_000, 'event with the good token');
  assert.equal(next?.data.notificationCreated.title, 'welcome back');
  events.stop();
});

test('an expired token is refused with 4403 and, with retries off, reported to the subscriber', async () => {
  // Expired two minutes ago: past the 30 s leeway. Signed with the server's key, so only `exp` is wrong.
  const now = Math.floor(Date.now() / 1000);
  const expired = h.signClaims({ sub: 'customer-3', role: 'customer', iat: now - 600, exp: now - 120 });
  const fresh = h.signClaims({ sub: 'customer-3', role: 'customer', iat: now, exp: now + 600 });
  assert.equal((await h.gql(server, '{ me { userId } }', {}, fresh)).status, 200, 'the hand-made token is otherwise valid');
  const c = client({ connectionParams: { token: expired } });
  const events = subscribe(c, NOTIFICATIONS);
  const { error } = await events.take((i) => i.error || i.next, 5_000, 'close error');
  assert.equal(error?.code, 4403, `got ${JSON.stringify({ code: error?.code, reason: error?.reason, message: error?.message })}`);
  assert.equal(c.log.connecting, 1);
});

test('duplicate subscription ids: the server closes 4409 and the client reports it to both', async () => {
  // A client whose id generator repeats itself: the second subscribe reuses an active id.
  const c = client({ generateID: () => 'same-id', connectionParams: { authorization: h.token('customer-4') } });
  const first = subscribe(c, NOTIFICATIONS);
  const second = subscribe(c, NOTIFICATIONS);
  const a = await first.take((i) => i.error || i.next || i.complete, 5_000, 'first subscription error');
  const b = await second.take((i) => i.error || i.next || i.complete, 5_000, 'second subscription error');
  assert.equal(a.error?.code, 4409, JSON.stringify(a));
  assert.equal(a.error.reason, 'Subscriber for same-id already exists');
  assert.equal(b.error?.code, 4409);
  assert.equal(c.log.connecting, 1, '4409 is fatal: no retry');

  // The same over a raw socket, where the exact frames are visible.
  const s = await rawSocket();
  s.send({ type: 'connection_init', payload: { authorization: `Bearer ${h.token('customer-4')}` } });
  assert.equal((await s.inbox.take()).type, 'connection_ack');
  s.send({ id: 'x', type: 'subscribe', payload: { query: NOTIFICATIONS } });
  s.send({ id: 'x', type: 'subscribe', payload: { query: NOTIFICATIONS } });
  const closed = await withTimeout(s.closed, 3_000, '4409 close');
  assert.deepEqual({ code: closed.code, reason: closed.reason }, { code: 4409, reason: 'Subscriber for x already exists' });
});

test('a reused id after complete is accepted', async () => {
  const s = await rawSocket();
  s.send({ type: 'connection_init', payload: { authorization: h.token('customer-4') } });
  assert.equal((await s.inbox.take()).type, 'connection_ack');
  s.send({ id: 'y', type: 'subscribe', payload: { query: '{ me { userId } }' } });
  assert.deepEqual(await s.inbox.take(), { id: 'y', type: 'next', payload: { data: { me: { userId: 'customer-4' } } } });
  assert.deepEqual(await s.inbox.take(), { id: 'y', type: 'complete' });
  s.send({ id: 'y', type: 'subscribe', payload: { query: '{ me { userId } }' } });
  assert.equal((await s.inbox.take()).type, 'next');
  assert.equal(s.ws.readyState, WebSocket.OPEN);
});

test('subscribe before connection_ack closes 4401; a second connection_init closes 4429', async () => {
  const early = await rawSocket();
  early.send({ id: '1', type: 'subscribe', payload: { query: NOTIFICATIONS } });
  assert.equal((await withTimeout(early.closed, 3_000, '4401 close')).code, 4401);

  const twice = await rawSocket();
  twice.send({ type: 'connection_init' });
  assert.equal((await twice.inbox.take()).type, 'connection_ack');
  twice.send({ type: 'connection_init' });
  assert.equal((await withTimeout(twice.closed, 3_000, '4429 close')).code, 4429);
});

test('ping/pong: the server answers a client ping with pong, before and after the ack', async () => {
  const s = await rawSocket();
  s.send({ type: 'ping', payload: { at: 1 } });
  const pong = await s.inbox.take((m) => m.type === 'pong', 2_000, 'pong before ack');
  assert.deepEqual(pong, { type: 'pong', payload: { at: 1 } });
  s.send({ type: 'connection_init' });
  await s.inbox.take((m) => m.type === 'connection_ack');
  s.send({ type: 'ping' });
  assert.equal((await s.inbox.take((m) => m.type === 'pong', 2_000, 'pong after ack')).type, 'pong');
  s.send({ type: 'pong' }); // unsolicited: ignored
  await h.sleep(200);
  assert.equal(s.ws.readyState, WebSocket.OPEN, 'an unsolicited pong is ignored');

  // graphql-ws's keepAlive option: the client pings, the server's pongs come back.
  const c = client({ keepAlive: 100, lazy: false, onNonLazyError: () => {} });
  await h.eventually(() => c.log.pongs.some((p) => p.received), { ms: 3_000, what: 'a pong for the client keep-alive' });
  assert.ok(c.log.pings.some((p) => !p.received), 'the client sent pings');
  assert.deepEqual(c.log.closes, []);
});

test('server heartbeat: an idle client that answers pings stays connected, a silent one is closed', async () => {
  const hb = await h.startServer({ env: { WS_HEARTBEAT_INTERVAL: '200', WS_INACTIVE_TIMEOUT: '1000' } });
  disposers.push(() => hb.stop());

  // graphql-ws over `ws` answers the server's ping frames (as browsers do): an idle subscription lives.
  const c = client({ connectionParams: { authorization: h.token('customer-5') } }, hb);
  const events = subscribe(c, NOTIFICATIONS);
  await h.eventually(() => c.log.connected === 1, { what: 'connected' });

  const raw = await rawSocket(hb);
  let pings = 0;
  raw.ws.on('ping', () => pings++);
  raw.send({ type: 'connection_init' });
  await raw.inbox.take((m) => m.type === 'connection_ack');

  // A socket that never answers pings (nor sends anything) goes quiet.
  const silent = await rawSocket(hb, { autoPong: false });
  silent.send({ type: 'connection_init' });
  await silent.inbox.take((m) => m.type === 'connection_ack');

  await h.sleep(2_500);
  assert.ok(pings >= 5, `expected a ping about every 200 ms, got ${pings} in 2.5 s`);
  assert.deepEqual(c.log.closes, [], 'the idle graphql-ws client was not closed');
  assert.equal(raw.ws.readyState, WebSocket.OPEN);
  const closed = await withTimeout(silent.closed, 1_000, 'the silent socket closing');
  assert.equal(closed.code, 1001);
  assert.ok(closed.at - silent.openedAt < 2_500, 'closed about WS_INACTIVE_TIMEOUT after its last sign of life');

  await h.ok(hb, SEND_NOTIFICATION, { u: 'customer-5', t: 'still here' }, staff);
  const { next } = await events.take((i) => i.next || i.error, 5_000, 'event on the idle subscription');
  assert.equal(next?.data.notificationCreated.title, 'still here');
  events.stop();
});

test('a message that is not JSON closes 4400 with a reason that fits a close frame', async () => {
  const s = await rawSocket();
  s.ws.send('{not json');
  const closed = await withTimeout(s.closed, 3_000, '4400 close');
  assert.equal(closed.code, 4400);
  assert.ok(Buffer.byteLength(closed.reason) <= 123, 'close reason fits in a close frame');
});
