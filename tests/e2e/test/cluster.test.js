'use strict';
// Several real switchboard processes acting as one: scripts/cluster.sh starts a private PostgreSQL
// and Redis, three nodes (the release binary) and HAProxy in front, exactly as an operator would,
// in a temporary state directory. Clients connect to the nodes directly (to prove what crosses
// from node to node) and through HAProxy (WebSocket and SSE). Then a node is killed with SIGKILL,
// Redis is stopped for 10 s under a stream of mutations, and Redis is restarted empty.
//
// The cluster is stopped and its directory deleted after the last test, and also when the process
// exits early (a failed hook, an uncaught error).

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const { once } = require('node:events');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const WebSocket = require('ws');
const { createClient } = require('graphql-ws');
const { createClient: createSseClient } = require('graphql-sse');
const YAML = require('yaml');
const h = require('../lib/harness');

const SCRIPT = path.join(h.REPO, 'scripts', 'cluster.sh');

const INVENTORY = 'subscription($p: ID) { inventoryChanged(productId: $p) { newQuantity sequence cursor } }';
const ORDER_UPDATED = 'subscription($o: ID!) { orderUpdated(orderId: $o) { trackingNumber sequence } }';
const ORDER_EVENTS = 'subscription { orderEvents { kind sequence order { id trackingNumber } } }';
const NOTIFICATIONS = 'subscription { notificationCreated { title sequence } }';
const CREATE_PRODUCT = 'mutation($sku: String!) { createProduct(input: {sku: $sku, name: $sku, price: "1.00", quantity: 0}) { id } }';
const CREATE_ORDER = 'mutation($c: ID!) { createOrder(input: {customerId: $c, total: "9.99"}) { id } }';
const SET_STOCK = 'mutation($p: ID!, $q: Int!) { setInventory(productId: $p, quantity: $q) { quantity } }';
const TRACK = 'mutation($o: ID!, $t: String!) { updateOrder(id: $o, input: {trackingNumber: $t}) { id } }';
const NOTIFY = 'mutation($u: ID!, $t: String!) { sendNotification(input: {userId: $u, type: "info", title: $t, message: "m"}) { id } }';
const PRESENCE = 'query($r: String!) { roomPresence(roomId: $r) { userId connections } }';

let dir;
let state; // cluster.env, as an object
let nodes; // [{ name, http, url, wsUrl }]
let lb; // the balancer, same shape
let staff;
let admin;

/** Runs scripts/cluster.sh on this test's cluster; returns its stdout. */
function cluster(...args) {
  try {
    return execFileSync('bash', [SCRIPT, ...args, '--dir', dir], {
      env: { ...process.env, SWITCHBOARD_BIN: h.BIN, JWT_SECRET: h.JWT_SECRET, RUST_LOG: 'info' },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 180_000,
    });
  } catch (err) {
    throw new Error(`scripts/cluster.sh ${args.join(' ')} failed: ${err.message}\n${err.stdout ?? ''}\n${err.stderr ?? ''}`);
  }
}

function readState() {
  const out = {};
  for (const line of fs.readFileSync(path.join(dir, 'cluster.env'), 'utf8').split('\n')) {
    const m = line.match(/^([A-Z0-9_]+)=(.*)$/);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

const endpoint = (name, http) => ({ name, http, url: `${http}/graphql`, wsUrl: `${http.replace(/^http/, 'ws')}/graphql` });

let stopped = false;
function down() {
  if (stopped || !dir) return;
  stopped = true;
  try {
    cluster('down', '--purge');
  } catch (err) {
    console.error(String(err));
  }
  fs.rmSync(dir, { recursive: true, force: true });
}
process.on('exit', down);
// The test runner stops a file that overruns with a signal: the cluster goes with it.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => {
    down();
    process.exit(128 + os.constants.signals[signal]);
  });
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-e2e-cluster-'));
  // As root, PostgreSQL runs as `postgres`, which must reach its data directory inside this one.
  fs.chmodSync(dir, 0o755);
  cluster('up', '--nodes', '3');
  state = readState();
  nodes = [1, 2, 3].map((i) => endpoint(`node-${i}`, state[`NODE_${i}_URL`]));
  lb = endpoint('balancer', state.BALANCER_URL);
  staff = h.token('staff-1', 'staff');
  admin = h.token('admin-1', 'admin');
});

after(down);

// --- helpers ------------------------------------------------------------------------------------

/** This node's own live GraphQL subscriptions (its /metrics gauge; `stats` counts the cluster). */
async function localSubscriptions(node) {
  const text = await (await fetch(`${node.http}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith('switchboard_subscriptions{'))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

/** Waits until node `i` holds `counts[i]` subscriptions, for every node. */
async function waitForLocalSubscriptions(counts, what) {
  await h.eventually(async () => {
    const now = await Promise.all(nodes.map(localSubscriptions));
    return now.every((n, i) => n === counts[i]);
  }, { ms: 10_000, what });
}

async function ready(node) {
  return (await fetch(`${node.http}/ready`)).json();
}

function wsClient(node, token) {
  return createClient({
    url: node.wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: token ? { authorization: `Bearer ${token}` } : {},
    retryAttempts: 0,
  });
}

/** A subscription whose results pile up in `events` (the root field's payload). */
function watch(client, query, variables, field, name) {
  const events = [];
  const failures = [];
  const dispose = client.subscribe({ query, variables }, {
    next: (r) => (r.errors ? failures.push(JSON.stringify(r.errors)) : events.push(r.data[field])),
    error: (e) => failures.push(e?.code ? `close ${e.code} ${e.reason}` : String(e?.message ?? JSON.stringify(e))),
    complete: () => {},
  });
  return {
    name,
    events,
    dispose,
    async take(n, ms = 10_000) {
      await h.eventually(() => {
        if (failures.length) throw new Error(`${name}: ${failures.join('; ')}`);
        return events.length >= n;
      }, { ms, what: `${name}: ${n} events (has ${events.length})` });
      return events;
    },
  };
}

/** Asserts that `events` carry consecutive sequence numbers. */
function assertGapFree(events, name) {
  const seqs = events.map((e) => e.sequence);
  for (let k = 1; k < seqs.length; k++) {
    if (seqs[k] !== seqs[k - 1] + 1) {
      assert.fail(`${name}: sequence ${seqs[k - 1]} is followed by ${seqs[k]} (${JSON.stringify(seqs)})`);
    }
  }
}

/** A room-channel (/ws) connection with an inbox of server messages. */
async function rooms(node, user) {
  const ws = new WebSocket(`${node.http.replace(/^http/, 'ws')}/ws?token=${h.token(user, 'customer', { name: user })}`);
  const inbox = new h.Inbox(`${user}@${node.name}`);
  ws.on('message', (data) => inbox.push(JSON.parse(data)));
  await once(ws, 'open');
  await inbox.take((m) => m.type === 'connection_established');
  const send = (type, payload) => ws.send(JSON.stringify({ type, payload }));
  return {
    ws,
    inbox,
    send,
    async join(roomId) {
      send('join_room', { roomId });
      const joined = await inbox.take((m) => m.type === 'room_joined' && m.payload.roomId === roomId);
      return joined.payload.members.map((m) => m.userId).sort();
    },
    expect(type, pred = () => true, ms = 10_000) {
      return inbox.take((m) => m.type === type && pred(m.payload), ms, type).then((m) => m.payload);
    },
    close() {
      ws.terminate();
    },
  };
}

async function presence(node, room) {
  const data = await h.ok(node, PRESENCE, { r: room }, staff);
  return data.roomPresence.map((m) => m.userId).sort();
}

async function presenceBecomes(node, room, users, ms = 10_000) {
  const want = [...users].sort();
  let last;
  await h.eventually(async () => {
    last = await presence(node, room);
    return JSON.stringify(last) === JSON.stringify(want);
  }, { ms, what: `roomPresence(${room}) on ${node.name} = ${JSON.stringify(want)}` }).catch((err) => {
    throw new Error(`${err.message}; it says ${JSON.stringify(last)}`);
  });
}

async function product(node, tag) {
  return (await h.ok(node, CREATE_PRODUCT, { sku: `cluster-${tag}-${process.pid}-${Date.now()}` }, staff)).createProduct.id;
}

// --- the tests ----------------------------------------------------------------------------------

test('every node is ready, hears Redis and labels its metrics with its NODE_ID', async () => {
  for (const node of nodes) {
    const body = await ready(node);
    assert.equal(body.status, 'ready');
    assert.equal(body.redis, 'up');
    assert.equal(body.node, node.name);
    const metrics = await (await fetch(`${node.http}/metrics`)).text();
    assert.match(metrics, new RegExp(`switchboard_backplane_up\\{node="${node.name}"\\} 1`));
  }
  const stats = await fetch(state.STATS_URL);
  assert.equal(stats.status, 200, 'the HAProxy stats page answers');
});

test('a change on any node reaches all four subscriptions on every node, in order', async () => {
  const p = await product(nodes[0], 'all4');
  const o = (await h.ok(nodes[1], CREATE_ORDER, { c: 'alice' }, staff)).createOrder.id;
  const alice = h.token('alice', 'customer');
  const clients = [];
  const watchers = [];
  for (const node of nodes) {
    const staffClient = wsClient(node, staff);
    const aliceClient = wsClient(node, alice);
    clients.push(staffClient, aliceClient);
    watchers.push({
      node,
      inv: watch(staffClient, INVENTORY, { p }, 'inventoryChanged', `inventoryChanged@${node.name}`),
      ord: watch(staffClient, ORDER_UPDATED, { o }, 'orderUpdated', `orderUpdated@${node.name}`),
      all: watch(staffClient, ORDER_EVENTS, {}, 'orderEvents', `orderEvents@${node.name}`),
      note: watch(aliceClient, NOTIFICATIONS, {}, 'notificationCreated', `notificationCreated@${node.name}`),
    });
  }
  try {
    await waitForLocalSubscriptions([4, 4, 4], 'four subscriptions on every node');
    // Each node makes a third of the changes, interleaved.
    for (let i = 0; i < 9; i++) {
      const node = nodes[i % 3];
      await h.ok(node, SET_STOCK, { p, q: i + 1 }, staff);
      await h.ok(node, TRACK, { o, t: `T${i}` }, staff);
      await h.ok(node, NOTIFY, { u: 'alice', t: `N${i}` }, staff);
    }
    const nine = [...Array(9).keys()];
    for (const w of watchers) {
      const inv = await w.inv.take(9);
      assert.deepEqual(inv.map((e) => e.newQuantity), nine.map((i) => i + 1), w.inv.name);
      assertGapFree(inv, w.inv.name);
      const ord = await w.ord.take(9);
      assert.deepEqual(ord.map((e) => e.trackingNumber), nine.map((i) => `T${i}`), w.ord.name);
      assertGapFree(ord, w.ord.name);
      const all = await w.all.take(9);
      assert.deepEqual(all.map((e) => [e.kind, e.order.id, e.order.trackingNumber]), nine.map((i) => ['UPDATED', o, `T${i}`]), w.all.name);
      assertGapFree(all, w.all.name);
      const notes = await w.note.take(9);
      assert.deepEqual(notes.map((e) => e.title), nine.map((i) => `N${i}`), w.note.name);
      assertGapFree(notes, w.note.name);
    }
    await h.sleep(300);
    for (const w of watchers) {
      for (const s of [w.inv, w.ord, w.all, w.note]) assert.equal(s.events.length, 9, `${s.name}: nothing twice`);
    }
  } finally {
    for (const w of watchers) for (const s of [w.inv, w.ord, w.all, w.note]) s.dispose();
    await Promise.all(clients.map((c) => c.dispose()));
  }
});

test('the three /ws relays reach a member on another node', async () => {
  const p = await product(nodes[0], 'relay');
  const o = (await h.ok(nodes[0], CREATE_ORDER, { c: 'bella' }, staff)).createOrder.id;
  const bella = await rooms(nodes[2], 'bella');
  try {
    await bella.join(`order:${o}`);
    await bella.join(`product:${p}`);
    await h.ok(nodes[0], SET_STOCK, { p, q: 5 }, staff);
    await h.ok(nodes[1], TRACK, { o, t: 'RELAY' }, staff);
    await h.ok(nodes[0], NOTIFY, { u: 'bella', t: 'hello from node-1' }, staff);
    const inv = await bella.expect('inventory_update');
    assert.equal(inv.newQuantity, 5);
    assert.ok(inv.cursor && inv.sequence >= 1, JSON.stringify(inv));
    const ord = await bella.expect('order_update');
    assert.equal(ord.trackingNumber, 'RELAY');
    const note = await bella.expect('notification');
    assert.equal(note.title, 'hello from node-1');
  } finally {
    bella.close();
  }
});

test('presence is one list on every node: room_joined, user_joined_room, roomPresence', async () => {
  const room = 'cluster-lobby';
  const ann = await rooms(nodes[0], 'ann');
  const bob = await rooms(nodes[1], 'bob');
  const cat = await rooms(nodes[2], 'cat');
  try {
    assert.deepEqual(await ann.join(room), ['ann']);
    await presenceBecomes(nodes[1], room, ['ann']);
    assert.deepEqual(await bob.join(room), ['ann', 'bob'], 'bob, on node-2, sees ann of node-1');
    assert.equal((await ann.expect('user_joined_room', (p) => p.userId === 'bob')).roomId, room);
    await presenceBecomes(nodes[2], room, ['ann', 'bob']);
    assert.deepEqual(await cat.join(room), ['ann', 'bob', 'cat']);
    await ann.expect('user_joined_room', (p) => p.userId === 'cat');
    await bob.expect('user_joined_room', (p) => p.userId === 'cat');
    for (const node of nodes) await presenceBecomes(node, room, ['ann', 'bob', 'cat']);
    const online = await h.ok(nodes[2], '{ a: isUserOnline(userId: "ann") z: isUserOnline(userId: "nobody") }', {}, staff);
    assert.deepEqual(online, { a: true, z: false });

    bob.send('leave_room', { roomId: room });
    await ann.expect('user_left_room', (p) => p.userId === 'bob');
    await cat.expect('user_left_room', (p) => p.userId === 'bob');
    for (const node of nodes) await presenceBecomes(node, room, ['ann', 'cat']);
  } finally {
    for (const c of [ann, bob, cat]) c.close();
  }
});

test("Switchboard's own client across two nodes: presence, typing, and updates resumed after drops with no gap", async () => {
  const { createRoomsClient } = await import('@switchboard/client');
  const { createClient } = await import('@switchboard/client/graphql-ws');
  const { startProxy } = require('../lib/proxy');
  // Bob's connections to node-2 go through a proxy that will cut them.
  const proxy = await startProxy(Number(new URL(nodes[1].http).port));
  const p = await product(nodes[0], 'library');
  const roomId = `product:${p}`;
  const backoff = { minDelay: 50, maxDelay: 400 };
  const person = (base, user) => createRoomsClient({ url: `${base}/ws`, token: h.token(user, 'customer', { name: user }), webSocketImpl: WebSocket, backoff });
  const ann = person(nodes[0].http.replace(/^http/, 'ws'), 'lib-ann');
  const bob = person(`ws://127.0.0.1:${proxy.port}`, 'lib-bob');
  const typing = [];
  const updates = [];
  bob.on('typing', (e) => typing.push([e.userId, e.isTyping, Date.now()]));
  bob.on('update', (e) => updates.push([e.payload.sequence, e.payload.newQuantity]));
  const gql = createClient({ url: proxy.url(), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${staff}` }, backoff });
  const events = [];
  const problems = [];
  gql.subscribe({ query: 'subscription($p: ID, $after: String) { inventoryChanged(productId: $p, after: $after) { cursor sequence newQuantity } }', variables: { p } }, {
    next: (r) => events.push([r.data.inventoryChanged.sequence, r.data.inventoryChanged.newQuantity]),
    error: (e) => problems.push(`${e.kind} ${e.code}`),
    complete: () => problems.push('completed'),
  });
  const names = (client) => client.members(roomId).map((m) => m.userId).join(',');
  const same = (want, what) => h.eventually(() => names(ann) === want && names(bob) === want, { ms: 10_000, what: `${what}: ann sees ${names(ann)}, bob ${names(bob)}` });
  try {
    await ann.join(roomId);
    await bob.join(roomId);
    await same('lib-ann,lib-bob', 'one list on both nodes');

    // Typing crosses nodes, and the server stops it 3 s later.
    ann.typing(roomId, 'note');
    await h.eventually(() => typing.length === 2, { ms: 8_000, what: 'typing started and stopped' });
    assert.deepEqual(typing.map(([u, on]) => [u, on]), [['lib-ann', true], ['lib-ann', false]]);
    assert.ok(typing[1][2] - typing[0][2] >= 2_500, `stopped after ${typing[1][2] - typing[0][2]} ms`);

    // Bob's node-2 connections are cut before the first update; changes land on node-1 meanwhile.
    await h.eventually(async () => (await localSubscriptions(nodes[1])) >= 1, { what: 'the subscription on node-2' });
    proxy.hold();
    proxy.dropAll();
    for (let q = 1; q <= 3; q++) await h.ok(nodes[0], SET_STOCK, { p, q }, staff);
    proxy.release();
    for (let q = 4; q <= 12; q++) {
      await h.ok(nodes[0], SET_STOCK, { p, q }, staff);
      if (q === 8) {
        await h.eventually(() => bob.state === 'open', { what: 'bob back' });
        proxy.dropAll();
      }
    }
    const expected = Array.from({ length: 12 }, (_, i) => [i + 1, i + 1]);
    await h.eventually(() => updates.length >= 12 && events.length >= 12, { ms: 20_000, what: `12 updates (${updates.length}) and events (${events.length})` });
    assert.deepEqual(updates, expected, 'the room on node-2: every update of node-1 once, in order');
    assert.deepEqual(events, expected, 'the subscription on node-2: every event once, in order');
    assert.deepEqual(problems, []);
    await same('lib-ann,lib-bob', 'one list again after the reconnection');
  } finally {
    ann.close();
    bob.close();
    await gql.dispose();
    await proxy.close();
  }
});

test('through HAProxy: graphql-ws, GraphQL over SSE and /ws, spread over the nodes', async () => {
  const p = await product(lb, 'lb');
  const before = await Promise.all(nodes.map(localSubscriptions));
  // Three graphql-ws clients and one SSE stream through the balancer, one /ws member.
  const clients = [0, 1, 2].map(() => wsClient(lb, staff));
  const subs = clients.map((c, i) => watch(c, INVENTORY, { p }, 'inventoryChanged', `ws#${i}@balancer`));
  const sse = createSseClient({ url: `${lb.http}/graphql/stream`, headers: () => ({ authorization: `Bearer ${staff}` }) });
  const sseSub = watch(sse, INVENTORY, { p }, 'inventoryChanged', 'sse@balancer');
  const member = await rooms(lb, 'dora');
  try {
    await member.join(`product:${p}`);
    let counts;
    await h.eventually(async () => {
      counts = await Promise.all(nodes.map(localSubscriptions));
      return counts.reduce((a, b) => a + b, 0) === before.reduce((a, b) => a + b, 0) + 4;
    }, { ms: 10_000, what: 'four subscriptions through the balancer' });
    const used = counts.filter((n, i) => n > before[i]).length;
    assert.ok(used >= 2, `leastconn spreads the connections: per node ${JSON.stringify(counts)} (before ${JSON.stringify(before)})`);

    for (let q = 1; q <= 3; q++) {
      const sent = Date.now();
      await h.ok(lb, SET_STOCK, { p, q }, staff);
      // Each event comes through at once, SSE included (nothing buffers the stream).
      for (const s of [...subs, sseSub]) await s.take(q, 3_000);
      assert.ok(Date.now() - sent < 3_000);
      assert.equal((await member.expect('inventory_update', (x) => x.newQuantity === q)).newQuantity, q);
    }
    for (const s of [...subs, sseSub]) {
      assert.deepEqual(s.events.map((e) => e.newQuantity), [1, 2, 3], s.name);
      assertGapFree(s.events, s.name);
    }
  } finally {
    for (const s of [...subs, sseSub]) s.dispose();
    member.close();
    sse.dispose();
    await Promise.all(clients.map((c) => c.dispose()));
  }
});

test('kill -9 of a node: its members leave everywhere within 10 s; the others carry on', async () => {
  const room = 'cluster-kill';
  const p = await product(nodes[0], 'kill');
  const eve = await rooms(nodes[0], 'eve');
  const dan = await rooms(nodes[1], 'dan'); // on the node that dies
  const fay = await rooms(nodes[2], 'fay');
  const clients = [wsClient(nodes[0], staff), wsClient(nodes[2], staff)];
  const subs = clients.map((c, i) => watch(c, INVENTORY, { p }, 'inventoryChanged', `inventoryChanged@${[nodes[0], nodes[2]][i].name}`));
  try {
    await eve.join(room);
    await presenceBecomes(nodes[1], room, ['eve']);
    await dan.join(room);
    await presenceBecomes(nodes[2], room, ['dan', 'eve']);
    await fay.join(room);
    for (const node of nodes) await presenceBecomes(node, room, ['dan', 'eve', 'fay']);
    await h.eventually(async () => (await localSubscriptions(nodes[0])) >= 1 && (await localSubscriptions(nodes[2])) >= 1,
      { ms: 10_000, what: 'the subscriptions on node-1 and node-3' });
    await h.ok(nodes[0], SET_STOCK, { p, q: 1 }, staff);
    await h.ok(nodes[2], SET_STOCK, { p, q: 2 }, staff);

    const killedAt = Date.now();
    cluster('kill', 'node-2');
    // Requests through the balancer keep working: a refused connection is retried on another node.
    for (let i = 0; i < 10; i++) await h.ok(lb, '{ products(first: 1) { id } }', {}, staff);
    // eve and fay hear dan leave, within 10 s, as if he had left.
    const [left1, left3] = await Promise.all([
      eve.expect('user_left_room', (x) => x.userId === 'dan', 10_000),
      fay.expect('user_left_room', (x) => x.userId === 'dan', 10_000),
    ]);
    assert.equal(left1.roomId, room);
    assert.equal(left3.roomId, room);
    const took = Date.now() - killedAt;
    assert.ok(took < 10_000, `took ${took} ms`);
    await presenceBecomes(nodes[0], room, ['eve', 'fay'], 1_000);
    await presenceBecomes(nodes[2], room, ['eve', 'fay'], 1_000);
    // HAProxy took the node out of rotation.
    await h.eventually(async () => {
      const csv = await (await fetch(`${state.STATS_URL};csv`)).text();
      return csv.split('\n').some((l) => l.startsWith('nodes,node-2,') && l.split(',')[17].startsWith('DOWN'));
    }, { ms: 5_000, what: 'node-2 DOWN on the HAProxy stats page' });

    // The survivors' subscribers were not disturbed and keep getting events from both survivors.
    await h.ok(nodes[0], SET_STOCK, { p, q: 3 }, staff);
    await h.ok(nodes[2], SET_STOCK, { p, q: 4 }, staff);
    for (const s of subs) {
      await s.take(4);
      assert.deepEqual(s.events.map((e) => e.newQuantity), [1, 2, 3, 4], s.name);
      assertGapFree(s.events, s.name);
    }
  } finally {
    for (const s of subs) s.dispose();
    await Promise.all(clients.map((c) => c.dispose()));
    for (const c of [eve, dan, fay]) c.close();
  }
  // `up` brings the dead node back (the same port, the same store); it joins the cluster again.
  cluster('up');
  assert.equal((await ready(nodes[1])).redis, 'up');
  await presenceBecomes(nodes[1], room, []);
});

test('Redis stopped for 10 s under a stream of mutations: every subscriber on every node ends gap-free', async () => {
  const p = await product(nodes[0], 'redis-stop');
  const clients = nodes.map((node) => wsClient(node, null));
  const subs = clients.map((c, i) => watch(c, INVENTORY, { p }, 'inventoryChanged', `inventoryChanged@${nodes[i].name}`));
  const sse = createSseClient({ url: `${lb.http}/graphql/stream` });
  subs.push(watch(sse, INVENTORY, { p }, 'inventoryChanged', 'sse@balancer'));
  try {
    await h.eventually(async () => (await Promise.all(nodes.map(localSubscriptions))).reduce((a, b) => a + b, 0) >= 4,
      { ms: 10_000, what: 'four subscriptions' });
    // One writer, round-robin over the three nodes, 20 mutations a second.
    let q = 0;
    let writing = true;
    const writer = (async () => {
      while (writing) {
        q += 1;
        await h.ok(nodes[q % 3], SET_STOCK, { p, q }, staff);
        await h.sleep(50);
      }
    })();
    await h.sleep(1_000);
    cluster('stop', 'redis');
    const stoppedAt = Date.now();
    for (const node of nodes) {
      await h.eventually(async () => (await ready(node)).redis === 'down', { ms: 10_000, what: `${node.name} sees Redis down` });
    }
    const metrics = await (await fetch(`${nodes[0].http}/metrics`)).text();
    assert.match(metrics, /switchboard_backplane_up\{node="node-1"\} 0/);
    await h.sleep(Math.max(0, 10_000 - (Date.now() - stoppedAt)));
    cluster('up'); // starts Redis again, waits until every node hears it
    await h.sleep(1_000);
    writing = false;
    await writer;
    const n = q;
    assert.ok(n > 150, `only ${n} mutations were made`);
    for (const s of subs) {
      const events = await s.take(n, 20_000);
      assert.deepEqual(events.map((e) => e.newQuantity), [...Array(n).keys()].map((k) => k + 1), `${s.name}: every change, once, in order`);
      assertGapFree(events, s.name);
    }
    // The logs say when the backplane went and came back.
    const log = fs.readFileSync(path.join(dir, 'node-1.log'), 'utf8');
    assert.match(log, /backplane down/);
    assert.match(log.slice(log.lastIndexOf('backplane down')), /backplane up/);
  } finally {
    for (const s of subs) s.dispose();
    sse.dispose();
    await Promise.all(clients.map((c) => c.dispose()));
  }
});

test('a Redis restart that empties it: presence and events carry on', async () => {
  const room = 'cluster-restart';
  const p = await product(nodes[0], 'redis-restart');
  const gil = await rooms(nodes[0], 'gil');
  const hal = await rooms(nodes[2], 'hal');
  const client = wsClient(nodes[1], null);
  const sub = watch(client, INVENTORY, { p }, 'inventoryChanged', 'inventoryChanged@node-2');
  try {
    await gil.join(room);
    await presenceBecomes(nodes[2], room, ['gil']);
    await hal.join(room);
    for (const node of nodes) await presenceBecomes(node, room, ['gil', 'hal']);
    await h.eventually(async () => (await localSubscriptions(nodes[1])) >= 1, { ms: 10_000, what: 'the subscription on node-2' });
    await h.ok(nodes[0], SET_STOCK, { p, q: 1 }, staff);

    cluster('kill', 'redis');
    await h.ok(nodes[0], SET_STOCK, { p, q: 2 }, staff);
    cluster('up'); // an empty Redis: nothing was saved
    const keys = execFileSync('redis-cli', ['-p', state.REDIS_PORT, 'dbsize'], { encoding: 'utf8' });
    assert.ok(Number(keys) < 20, `Redis restarted empty (${keys.trim()} keys since)`);
    await h.ok(nodes[2], SET_STOCK, { p, q: 3 }, staff);
    const events = await sub.take(3);
    assert.deepEqual(events.map((e) => e.newQuantity), [1, 2, 3]);
    assertGapFree(events, sub.name);

    // Past a full resynchronisation of presence (every 5 s), every node still lists both members.
    await h.sleep(6_000);
    for (const node of nodes) await presenceBecomes(node, room, ['gil', 'hal'], 2_000);
    // And presence still moves across nodes.
    hal.close();
    await gil.expect('user_left_room', (x) => x.userId === 'hal');
    for (const node of nodes) await presenceBecomes(node, room, ['gil']);
  } finally {
    sub.dispose();
    await client.dispose();
    gil.close();
    hal.close();
  }
});

test('deploy/haproxy.cfg is valid, and the cluster runs it with only its node list changed', () => {
  execFileSync('haproxy', ['-q', '-c', '-f', path.join(h.REPO, 'deploy', 'haproxy.cfg')], { stdio: 'pipe' });
  // Everything but the lines from "# nodes:" to "# end of nodes".
  const strip = (text) => text.replace(/^\s*# nodes:[^]*?# end of nodes\n/m, '');
  const shipped = fs.readFileSync(path.join(h.REPO, 'deploy', 'haproxy.cfg'), 'utf8');
  const running = fs.readFileSync(path.join(dir, 'haproxy.cfg'), 'utf8');
  assert.equal(strip(running), strip(shipped));
});

test('deploy/compose.yaml: the same topology, with the checked haproxy.cfg', () => {
  // Docker is not at hand here: parse the file and check what a typo would break.
  // Compose follows YAML 1.1's merge keys (`<<: *node`), which the yaml package needs told.
  const compose = YAML.parse(fs.readFileSync(path.join(h.REPO, 'deploy', 'compose.yaml'), 'utf8'), { merge: true });
  const services = compose.services;
  assert.deepEqual(Object.keys(services).sort(), ['haproxy', 'node-1', 'node-2', 'node-3', 'postgres', 'redis']);
  const nodeNames = ['node-1', 'node-2', 'node-3'];
  const envs = nodeNames.map((n) => services[n].environment);
  assert.deepEqual(envs.map((e) => e.NODE_ID), nodeNames, 'each node has its own NODE_ID');
  for (const e of envs) {
    assert.equal(e.DATABASE_URL, envs[0].DATABASE_URL, 'one database');
    assert.equal(e.REDIS_URL, envs[0].REDIS_URL, 'one Redis');
    assert.equal(e.BIND_ADDR, '0.0.0.0:4000');
  }
  assert.match(envs[0].DATABASE_URL, /^postgres:\/\/[^@]+@postgres:5432\//);
  assert.match(envs[0].REDIS_URL, /^redis:\/\/redis:6379$/);
  for (const n of nodeNames) {
    assert.equal(services[n].build.dockerfile, 'Dockerfile');
    assert.ok(fs.existsSync(path.join(h.REPO, 'deploy', services[n].build.context, services[n].build.dockerfile)));
  }
  // HAProxy mounts deploy/haproxy.cfg, whose node list names these services on their port.
  assert.ok(services.haproxy.volumes.some((v) => v.startsWith('./haproxy.cfg:')), JSON.stringify(services.haproxy.volumes));
  const cfg = fs.readFileSync(path.join(h.REPO, 'deploy', 'haproxy.cfg'), 'utf8');
  const servers = [...cfg.matchAll(/^\s*server (\S+) (\S+)/gm)].map((m) => [m[1], m[2]]);
  assert.deepEqual(servers, nodeNames.map((n) => [n, `${n}:4000`]));
  assert.deepEqual(services.haproxy.ports, ['127.0.0.1:4000:4000', '127.0.0.1:8404:8404']);
});
