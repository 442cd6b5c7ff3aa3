'use strict';
// The e2e harness: starts the already-built release binary on a free port with a throw-away store
// and a known JWT secret, mints tokens with the binary's own `token` command, and kills the
// server afterwards. It builds nothing: run `cargo build --release` (or tests/e2e/run.sh) first,
// or point SWITCHBOARD_BIN at a binary.

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..', '..');
const BIN = process.env.SWITCHBOARD_BIN || path.join(REPO, 'target', 'release', 'switchboard');
const JWT_SECRET = 'e2e-secret-not-for-production';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// The tracing formatter may colour its output; strip ANSI escapes before matching.
const plain = (s) => s.replace(/\x1b\[[0-9;]*m/g, '');

/** Every server this process started, so that a crashed test still leaves none behind. */
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

function checkBinary() {
  if (!fs.existsSync(BIN)) {
    throw new Error(`no server binary at ${BIN}: run \`cargo build --release\` first or set SWITCHBOARD_BIN`);
  }
}

/** A JWT for `sub` signed with the test secret, printed by `switchboard token`. */
function token(sub, role = 'customer', { name, ttl } = {}) {
  checkBinary();
  const args = ['token', '--sub', sub, '--role', role];
  if (name) args.push('--name', name);
  if (ttl !== undefined) args.push('--ttl', String(ttl));
  return execFileSync(BIN, args, { env: { ...process.env, JWT_SECRET }, encoding: 'utf8' }).trim();
}

/**
 * An HS256 JWT with exactly these claims, for tokens `switchboard token` will not make (expired
 * ones). Signed with node:crypto so that the test needs no JWT library.
 */
function signClaims(claims, secret = JWT_SECRET) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  const signature = require('node:crypto').createHmac('sha256', secret).update(unsigned).digest('base64url');
  return `${unsigned}.${signature}`;
}

/** A directory under the OS temp dir, removed with `cleanup()`. */
function tempDir(prefix = 'switchboard-e2e-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Starts `switchboard` and resolves once it logs `listening on ADDR`.
 *
 * Options: `demo` (seed sample data), `port` (0 = free port; a fixed one to restart on the same
 * address), `databaseUrl` (default `sqlite::memory:`), `env` (extra variables).
 * Returns `{ port, http, ws, url, wsUrl, logs(), stop() }`.
 */
async function startServer({ demo = false, port = 0, databaseUrl = 'sqlite::memory:', env = {} } = {}) {
  checkBinary();
  // Binding a port that the previous server on it has just released can race its exit: retry.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce({ demo, port, databaseUrl, env });
    } catch (err) {
      if (port === 0 || attempt >= 20 || !/Address already in use|AddrInUse/i.test(err.message)) throw err;
      await sleep(100);
    }
  }
}

function startOnce({ demo, port, databaseUrl, env }) {
  const args = demo ? ['--demo'] : [];
  // A fresh working directory, so that no `.env` file of the developer's changes the server.
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-cwd-'));
  const child = spawn(BIN, args, {
    cwd,
    env: {
      PATH: process.env.PATH,
      BIND_ADDR: `127.0.0.1:${port}`,
      DATABASE_URL: databaseUrl,
      JWT_SECRET,
      RUST_LOG: 'info',
      NO_COLOR: '1',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  let output = '';
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    running.delete(child);
    fs.rmSync(cwd, { recursive: true, force: true });
    resolve({ code, signal });
  }));

  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`switchboard did not log "listening on" within 15 s; output:\n${output}`));
    }, 15_000);
    const onData = (chunk) => {
      output += plain(chunk.toString());
      const m = output.match(/listening on (\d+\.\d+\.\d+\.\d+):(\d+)/);
      if (m && timer) {
        clearTimeout(timer);
        const [host, p] = [m[1], Number(m[2])];
        const http = `http://${host}:${p}`;
        const ws = `ws://${host}:${p}`;
        resolve({
          port: p,
          http,
          ws,
          url: `${http}/graphql`,
          wsUrl: `${ws}/graphql`,
          pid: child.pid,
          logs: () => output,
          exited,
          /** SIGTERM (graceful: sockets get 1001), SIGKILL after 5 s. */
          async stop() {
            if (child.exitCode !== null || child.signalCode !== null) return exited;
            child.kill('SIGTERM');
            const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
            const result = await exited;
            clearTimeout(killer);
            return result;
          },
        });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`switchboard exited (code ${code}, signal ${signal}) before listening; output:\n${output}`));
    });
  });
}

/** POST a GraphQL request; resolves `{ status, body }`. */
async function gql(server, query, variables = {}, bearer) {
  const headers = { 'content-type': 'application/json' };
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  const res = await fetch(server.url, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

/** POST a GraphQL request that must succeed; resolves its `data`. */
async function ok(server, query, variables, bearer) {
  const { status, body } = await gql(server, query, variables, bearer);
  if (status !== 200 || body.errors) {
    throw new Error(`expected success, got ${status} ${JSON.stringify(body)}`);
  }
  return body.data;
}

/** The server's count of active GraphQL subscriptions (`stats` needs a staff or admin token). */
async function activeSubscriptions(server, adminToken) {
  return (await ok(server, '{ stats { activeSubscriptions } }', {}, adminToken)).stats.activeSubscriptions;
}

/** Waits until the server reports at least `n` active subscriptions (so a publish reaches them). */
async function waitForSubscriptions(server, n, adminToken, ms = 5_000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await activeSubscriptions(server, adminToken);
    if (last >= n) return last;
    await sleep(25);
  }
  throw new Error(`expected ${n} active subscriptions within ${ms} ms; the server reports ${last}`);
}

/** Polls `fn` until it returns a truthy value; throws with `what` after `ms`. */
async function eventually(fn, { ms = 5_000, every = 25, what = 'condition' } = {}) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`${what} not met within ${ms} ms`);
    await sleep(every);
  }
}

/**
 * What each test of a file starts (servers, proxies, clients), undone in reverse order after it:
 * `const cleanups = h.undoAfterEach(afterEach); … cleanups.push(() => server.stop());`.
 */
function undoAfterEach(afterEach) {
  let pending = [];
  afterEach(async () => {
    const undo = pending.reverse();
    pending = [];
    for (const fn of undo) await fn();
  });
  return { push: (fn) => pending.push(fn) };
}

/** A queue of pushed items with `take(pred)` that waits for a match (consuming it). */
class Inbox {
  constructor(name) {
    this.name = name;
    this.items = [];
    this.waiters = new Set();
  }
  push(item) {
    this.items.push(item);
    for (const w of [...this.waiters]) w();
  }
  take(pred = () => true, ms = 5_000, what = 'a matching item') {
    return new Promise((resolve, reject) => {
      const check = () => {
        const i = this.items.findIndex(pred);
        if (i < 0) return false;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(this.items.splice(i, 1)[0]);
        return true;
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`${this.name}: no ${what} within ${ms} ms; got ${JSON.stringify(this.items).slice(0, 800)}`));
      }, ms);
      if (!check()) this.waiters.add(check);
    });
  }
}

module.exports = {
  BIN,
  JWT_SECRET,
  REPO,
  Inbox,
  activeSubscriptions,
  eventually,
  gql,
  ok,
  signClaims,
  sleep,
  startServer,
  undoAfterEach,
  tempDir,
  token,
  waitForSubscriptions,
};
