// @switchboard/client installed as users install it: `npm pack` makes the tarball, which is
// installed into an empty project (its peer dependencies linked in, as an app that has them), a
// small TypeScript program is compiled against the package's types (strict; a program that
// misuses them must not compile), and the compiled program runs against a real server: a
// resuming subscription over graphql-ws and a room with its presence.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import h from '../lib/harness.js';

const CLIENT = path.join(h.REPO, 'clients', 'js');
const E2E_MODULES = path.join(h.REPO, 'tests', 'e2e', 'node_modules');
const TSC = path.join(CLIENT, 'node_modules', 'typescript', 'bin', 'tsc');

const PROGRAM = `
import WebSocket from 'ws';
import { SwitchboardError, createRoomsClient, type Member } from '@switchboard/client';
import { createClient } from '@switchboard/client/graphql-ws';

const [url, token, product] = process.argv.slice(2) as [string, string, string];
const client = createClient({
  url: \`ws://\${url}/graphql\`,
  webSocketImpl: WebSocket,
  connectionParams: () => ({ authorization: \`Bearer \${token}\` }),
});
const quantities: number[] = [];
await new Promise<void>((resolve, reject) => {
  client.subscribe<{ inventoryChanged: { cursor: string; newQuantity: number } }>(
    { query: 'subscription($p: ID, $after: String) { inventoryChanged(productId: $p, after: $after) { cursor newQuantity } }', variables: { p: product } },
    {
      next: (result) => {
        quantities.push(result.data!.inventoryChanged.newQuantity);
        if (quantities.length === 2) resolve();
      },
      error: (error: unknown) => reject(SwitchboardError.is(error) ? new Error(\`\${error.kind} \${error.code}\`) : error),
      complete: () => reject(new Error('completed')),
    },
  );
  // Changes made once the subscription is on its way: it starts from the server's position.
  setTimeout(() => void fetch(\`http://\${url}/graphql\`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: \`Bearer \${token}\` },
    body: JSON.stringify({ query: 'mutation($p: ID!) { a: setInventory(productId: $p, quantity: 1) { id } b: setInventory(productId: $p, quantity: 2) { id } }', variables: { p: product } }),
  }), 300);
});
const cursor: string = await client.eventCursor();

const rooms = createRoomsClient({ url: \`ws://\${url}/ws\`, token, webSocketImpl: WebSocket });
const members: Member[] = await rooms.join('lobby');
rooms.close();
await client.dispose();
console.log(JSON.stringify({ quantities, cursor, members: members.map((m) => [m.userId, m.connections]) }));
`;

const MISUSED = `
import { createRoomsClient } from '@switchboard/client';
const rooms = createRoomsClient({ url: 'ws://localhost/ws', token: 't' });
rooms.on('presence', (event) => console.log(event.nobody));
rooms.join(42);
`;

const TSCONFIG = {
  compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, outDir: 'out', lib: ['ES2022', 'DOM'], skipLibCheck: false },
  files: ['main.ts', 'env.d.ts'],
};

let dir;
after(() => dir && fs.rmSync(dir, { recursive: true, force: true }));

test('npm pack, installed into an empty project, compiled against its types and run against the server', async (t) => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-pack-'));
  const run = (cmd, args, options = {}) => execFileSync(cmd, args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...options });

  // The tarball: `prepack` runs the package's check (types, and dist/ matching src/).
  run('npm', ['pack', '--pack-destination', dir], { cwd: CLIENT });
  const tarballs = fs.readdirSync(dir).filter((f) => f.endsWith('.tgz'));
  assert.equal(tarballs.length, 1, `one tarball: ${tarballs}`);
  const tarball = path.join(dir, tarballs[0]);
  const listed = run('tar', ['-tzf', tarball]).split('\n');
  for (const file of ['package/dist/index.js', 'package/dist/index.d.ts', 'package/dist/graphql-ws.d.ts', 'package/dist/rooms.js', 'package/README.md']) {
    assert.ok(listed.includes(file), `${file} is in the tarball`);
  }
  assert.ok(!listed.some((f) => f.includes('node_modules')), 'no node_modules in the tarball');

  // An empty project that installs it (npm itself, from the tarball, no registry), and has the
  // peer dependencies an app brings (linked from this suite's own install).
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  run('npm', ['install', '--offline', '--legacy-peer-deps', '--no-audit', '--no-fund', '--loglevel=error', tarball]);
  const installed = path.join(dir, 'node_modules', '@switchboard', 'client');
  assert.ok(!fs.lstatSync(installed).isSymbolicLink(), 'a copy of the package, not a link');
  for (const peer of ['graphql-ws', 'graphql-sse', 'ws']) fs.symlinkSync(path.join(E2E_MODULES, peer), path.join(dir, 'node_modules', peer));
  // What @types/node and @types/ws would say, in the two lines the program needs.
  fs.writeFileSync(path.join(dir, 'env.d.ts'), "declare module 'ws' { const WebSocket: any; export default WebSocket; }\ndeclare const process: { argv: string[] };\n");
  fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify(TSCONFIG));

  // The types reject a misuse...
  fs.writeFileSync(path.join(dir, 'main.ts'), MISUSED);
  let refused = '';
  try {
    run(process.execPath, [TSC, '-p', '.']);
  } catch (err) {
    refused = err.stdout;
  }
  assert.match(refused, /main\.ts.*'nobody' does not exist/, `tsc refuses a misuse: ${refused}`);
  assert.match(refused, /main\.ts.*'number' is not assignable to parameter of type 'string'/, refused);
  // ...and compile the program.
  fs.writeFileSync(path.join(dir, 'main.ts'), PROGRAM);
  try {
    run(process.execPath, [TSC, '-p', '.']);
  } catch (err) {
    assert.fail(`the program does not compile: ${err.stdout}${err.stderr}`);
  }

  const server = await h.startServer();
  t.after(() => server.stop());
  const staff = h.token('staff-1', 'staff');
  const product = (await h.ok(server, 'mutation { createProduct(input: {sku: "PK-1", name: "P", price: "1.00"}) { id } }', {}, staff)).createProduct.id;
  const out = run(process.execPath, ['out/main.js', `127.0.0.1:${server.port}`, staff, product], { timeout: 30_000, env: { PATH: process.env.PATH } });
  const result = JSON.parse(out.trim().split('\n').pop());
  assert.deepEqual(result.quantities, [1, 2]);
  assert.match(result.cursor, /^[0-9a-f]{16}\.2$/);
  assert.deepEqual(result.members, [['staff-1', 1]]);
});
