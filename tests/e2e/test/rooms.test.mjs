// The room channel (/ws) through Switchboard's own rooms client (@switchboard/client): presence
// kept from the snapshot and the changes after it agrees on every client through joins, leaves,
// a killed tab and a reconnection; a typing indicator stops by itself (the server's 3 s) and is
// throttled on the way out; an entity room's updates resume after drops, including one before the
// first update, with no gap and no duplicate.

import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { createRoomsClient } from '@switchboard/client';
import h from '../lib/harness.js';
import { startProxy } from '../lib/proxy.js';

const cleanups = h.undoAfterEach(afterEach);

const staff = () => h.token('staff-1', 'staff');

/** A rooms client for `user` at `base` (`ws://host:port`), with every event it emits recorded. */
function person(base, user, { name = user, role = 'customer', ...options } = {}) {
  const token = h.token(user, role, { name });
  const rooms = createRoomsClient({ url: `${base}/ws`, token, webSocketImpl: WebSocket, backoff: { minDelay: 50, maxDelay: 400 }, ...options });
  cleanups.push(() => rooms.close());
  const seen = { errors: [], typing: [], updates: [], resets: [], states: [] };
  rooms.on('error', (e) => seen.errors.push(e));
  rooms.on('typing', (e) => seen.typing.push({ ...e, at: Date.now() }));
  rooms.on('update', (e) => seen.updates.push(e));
  rooms.on('reset', (e) => seen.resets.push(e));
  rooms.on('status', (e) => seen.states.push(e.state));
  return { rooms, seen, user };
}

/** Who is in `roomId` as `client` sees it: user ids and names, in arrival order. */
const people = (client, roomId) => client.rooms.members(roomId).map((m) => `${m.userId}:${m.name}`);

/** Waits until every client sees `expected` in `roomId`. */
async function everyoneSees(clients, roomId, expected, what) {
  await h.eventually(() => clients.every((c) => JSON.stringify(people(c, roomId)) === JSON.stringify(expected)), {
    ms: 5_000,
    what: `${what}: ${clients.map((c) => `${c.user} sees ${people(c, roomId)}`).join('; ')}`,
  });
}

test('presence is the same on two clients after joins, leaves, a killed tab and a reconnection', async () => {
  const server = await h.startServer();
  cleanups.push(() => server.stop());
  const proxy = await startProxy(server.port);
  cleanups.push(() => proxy.close());
  const room = 'lobby';

  // Alice goes through the proxy (to be cut off later), Bob straight to the server.
  const alice = person(`ws://127.0.0.1:${proxy.port}`, 'alice', { name: 'Alice' });
  const bob = person(server.ws, 'bob', { name: 'Bob' });
  await alice.rooms.join(room);
  const members = await bob.rooms.join(room);
  assert.deepEqual(members.map((m) => m.userId), ['alice', 'bob'], 'join resolves with the members');

  // Carol has two tabs: one on the library, one a bare socket that will be killed.
  const carol = person(server.ws, 'carol', { name: 'Carol' });
  await carol.rooms.join(room);
  const tab = new WebSocket(`${server.ws}/ws?token=${h.token('carol', 'customer', { name: 'Carol' })}`);
  await new Promise((resolve, reject) => {
    tab.on('message', (data) => {
      const message = JSON.parse(data);
      if (message.type === 'connection_established') tab.send(JSON.stringify({ type: 'join_room', payload: { roomId: room } }));
      if (message.type === 'room_joined') resolve();
    });
    tab.on('error', reject);
  });
  const all = ['alice:Alice', 'bob:Bob', 'carol:Carol'];
  await everyoneSees([alice, bob, carol], room, all, 'three people, one entry each');
  // A newcomer's snapshot counts Carol's two tabs.
  const dave = person(server.ws, 'dave', { name: 'Dave' });
  const snapshot = await dave.rooms.join(room);
  assert.deepEqual(snapshot.map((m) => [m.userId, m.connections]), [['alice', 1], ['bob', 1], ['carol', 2], ['dave', 1]]);
  await dave.rooms.leave(room);
  await everyoneSees([alice, bob, carol], room, all, 'Dave came and went');

  // Carol's second tab is killed: she is still there (her other tab), for everyone.
  tab.terminate();
  await h.sleep(300);
  await everyoneSees([alice, bob, carol], room, all, 'a killed tab of someone still present');
  // Her last tab leaves: she is gone for everyone.
  await carol.rooms.leave(room);
  await everyoneSees([alice, bob], room, ['alice:Alice', 'bob:Bob'], 'Carol left');

  // Alice's connection drops; Eve arrives while Alice is away; Alice comes back by herself.
  proxy.hold();
  assert.equal(proxy.dropAll(), 1);
  const eve = person(server.ws, 'eve', { name: 'Eve' });
  await eve.rooms.join(room);
  await everyoneSees([bob, eve], room, ['bob:Bob', 'eve:Eve'], 'Alice away');
  proxy.release();
  await everyoneSees([alice, bob, eve], room, ['bob:Bob', 'eve:Eve', 'alice:Alice'], 'Alice back, in arrival order');
  assert.ok(alice.seen.states.includes('reconnecting') && alice.rooms.state === 'open', `${alice.seen.states}`);
  for (const p of [alice, bob, carol, eve]) {
    assert.deepEqual(p.seen.errors.filter((e) => e.kind !== 'closed' && e.kind !== 'network'), [], `${p.user}: no refusal`);
  }
});

test('a typing indicator is throttled on the way out and stops by itself after 3 s', async () => {
  const server = await h.startServer();
  cleanups.push(() => server.stop());
  const ana = person(server.ws, 'ana', { name: 'Ana' });
  const sam = person(server.ws, 'sam', { name: 'Sam' });
  await ana.rooms.join('desk');
  await sam.rooms.join('desk');

  // Ten keystrokes in half a second: one `isTyping: true` goes out.
  for (let i = 0; i < 10; i++) {
    assert.equal(ana.rooms.typing('desk', 'note'), true);
    await h.sleep(50);
  }
  await h.eventually(() => sam.seen.typing.length >= 1, { what: 'Sam sees Ana typing' });
  const started = sam.seen.typing[0];
  assert.deepEqual([started.userId, started.isTyping, started.field], ['ana', true, 'note']);
  assert.equal(sam.rooms.members('desk').find((m) => m.userId === 'ana').isTyping, true, 'in the presence list too');
  // Ana never says she stopped: the server does, 3 s after her last `true`.
  await h.eventually(() => sam.seen.typing.length >= 2, { ms: 6_000, what: 'the indicator stopped' });
  const stopped = sam.seen.typing[1];
  assert.equal(stopped.isTyping, false);
  const after = stopped.at - started.at;
  assert.ok(after >= 2_500 && after <= 4_500, `stopped ${after} ms after it started`);
  assert.equal(sam.seen.typing.length, 2, 'one start (throttled), one stop');
  assert.equal(sam.rooms.members('desk').find((m) => m.userId === 'ana').isTyping, false);
  assert.equal(ana.seen.typing.length, 0, 'no echo to the typist');

  // Stopping by hand is sent at once; typing in a room not joined is refused locally.
  ana.rooms.typing('desk', 'note');
  await h.eventually(() => sam.seen.typing.length === 3, { what: 'typing again' });
  ana.rooms.stopTyping('desk');
  await h.eventually(() => sam.seen.typing.length === 4 && !sam.seen.typing[3].isTyping, { what: 'stopped by hand' });
  assert.equal(ana.rooms.typing('elsewhere'), false);
  assert.deepEqual([...ana.seen.errors, ...sam.seen.errors], []);
});

test("an entity room's updates resume after drops, the first one before any update, with no gap", async () => {
  const server = await h.startServer();
  cleanups.push(() => server.stop());
  const proxy = await startProxy(server.port);
  cleanups.push(() => proxy.close());
  const product = (await h.ok(server, 'mutation { createProduct(input: {sku: "R-1", name: "R", price: "1.00"}) { id } }', {}, staff())).createProduct.id;
  const roomId = `product:${product}`;
  const setStock = (q) => h.ok(server, 'mutation($p: ID!, $q: Int!) { setInventory(productId: $p, quantity: $q) { id } }', { p: product, q }, staff());

  const viewer = person(`ws://127.0.0.1:${proxy.port}`, 'viewer');
  const steady = person(server.ws, 'steady');
  await viewer.rooms.join(roomId);
  await steady.rooms.join(roomId);

  // Cut off before the first update, which lands meanwhile.
  proxy.hold();
  proxy.dropAll();
  await setStock(1);
  await setStock(2);
  proxy.release();
  for (let q = 3; q <= 60; q++) {
    await setStock(q);
    if (q % 20 === 0) {
      await h.eventually(() => viewer.rooms.state === 'open', { what: 'the viewer back' });
      proxy.dropAll();
    }
  }
  const expected = Array.from({ length: 60 }, (_, i) => [i + 1, i + 1]);
  for (const p of [viewer, steady]) {
    await h.eventually(() => p.seen.updates.length >= 60, { ms: 10_000, what: `${p.user}: 60 updates` });
    assert.deepEqual(p.seen.updates.map((u) => [u.payload.sequence, u.payload.newQuantity]), expected, `${p.user}: every update once, in order`);
    assert.ok(p.seen.updates.every((u) => u.type === 'inventory_update' && u.roomId === roomId));
    assert.deepEqual(p.seen.resets, [], `${p.user}: nothing to refetch`);
  }
  // The last drop (at 60) comes after every update: its reconnect may still be under way.
  const reconnects = () => viewer.seen.states.filter((s) => s === 'reconnecting').length;
  await h.eventually(() => reconnects() >= 4, { what: `four reconnects (${viewer.seen.states})` });
});
