// GraphQL over SSE through Switchboard's own client (@switchboard/client/graphql-sse), in both of
// graphql-sse's modes: a proxy drops every stream, first before any event with changes landing
// meanwhile, and each subscription still gets every event exactly once, in order.

import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@switchboard/client/graphql-sse';
import h from '../lib/harness.js';
import { startProxy } from '../lib/proxy.js';

const STOCK = 'subscription($p: ID, $after: String) { inventoryChanged(productId: $p, after: $after) { cursor sequence newQuantity } }';

const cleanups = h.undoAfterEach(afterEach);

test('SSE streams dropped, the first time before any event: nothing lost, nothing twice, in both modes', async () => {
  const server = await h.startServer();
  cleanups.push(() => server.stop());
  const proxy = await startProxy(server.port);
  cleanups.push(() => proxy.close());
  const staff = h.token('staff-1', 'staff');
  const admin = h.token('admin-1', 'admin');
  const product = (await h.ok(server, 'mutation { createProduct(input: {sku: "S-1", name: "S", price: "1.00"}) { id } }', {}, staff)).createProduct.id;
  const setStock = (q) => h.ok(server, 'mutation($p: ID!, $q: Int!) { setInventory(productId: $p, quantity: $q) { id } }', { p: product, q }, staff);

  const seen = {};
  for (const singleConnection of [false, true]) {
    const name = singleConnection ? 'single connection' : 'distinct connections';
    const client = createClient({
      url: `http://127.0.0.1:${proxy.port}/graphql/stream`,
      singleConnection,
      headers: () => ({ authorization: `Bearer ${staff}` }),
      backoff: { minDelay: 50, maxDelay: 400 },
    });
    cleanups.push(() => client.dispose());
    const events = [];
    const errors = [];
    client.subscribe({ query: STOCK, variables: { p: product } }, {
      next: (r) => events.push(r.data.inventoryChanged),
      error: (e) => errors.push(e),
      complete: () => errors.push('completed'),
    });
    seen[name] = { events, errors };
  }
  await h.waitForSubscriptions(server, 2, admin);

  proxy.hold();
  proxy.dropAll();
  await setStock(1);
  await setStock(2);
  proxy.release();
  for (let q = 3; q <= 60; q++) {
    await setStock(q);
    if (q % 20 === 0) {
      await h.waitForSubscriptions(server, 2, admin);
      proxy.dropAll();
    }
  }
  const expected = Array.from({ length: 60 }, (_, i) => [i + 1, i + 1]);
  for (const [name, { events, errors }] of Object.entries(seen)) {
    await h.eventually(() => events.length >= 60, { ms: 20_000, what: `${name}: 60 events (${events.length})` });
    assert.deepEqual(events.map((e) => [e.sequence, e.newQuantity]), expected, `${name}: every event once, in order`);
    assert.deepEqual(errors, [], `${name}: no error reached the app`);
  }
});
