'use strict';
// A TCP proxy (node:net) between clients and the server, for tests that need a network that
// misbehaves on cue: cut every connection at once, refuse new ones for a while, or stop
// forwarding what the server sends so that the server's writes back up.

const net = require('node:net');

/**
 * Listens on a free port of 127.0.0.1 and forwards every connection to `target` (a port on
 * 127.0.0.1). Returns `{ port, url(path), live, accepted, dropAll(), hold(), release(),
 * pauseDownstream(), resumeDownstream(), close() }`.
 */
async function startProxy(targetPort) {
  /** Live pairs: `{ client, upstream }`. */
  const pairs = new Set();
  let holding = false;
  let paused = false;
  const stats = { accepted: 0, refused: 0, dropped: 0 };

  const pause = (pair) => {
    // Stop reading from the server: the kernel buffers fill, then the server's writes block.
    pair.upstream.pause();
  };

  const server = net.createServer((client) => {
    if (holding) {
      stats.refused++;
      client.destroy();
      return;
    }
    stats.accepted++;
    client.setNoDelay(true);
    const upstream = net.connect({ host: '127.0.0.1', port: targetPort });
    upstream.setNoDelay(true);
    const pair = { client, upstream };
    pairs.add(pair);
    // Pipe by hand (not `.pipe()`): a paused upstream must stay paused whatever the client does.
    client.on('data', (chunk) => {
      if (!upstream.write(chunk)) client.pause();
    });
    upstream.on('drain', () => client.resume());
    upstream.on('data', (chunk) => {
      if (!client.write(chunk)) upstream.pause();
    });
    client.on('drain', () => {
      if (!paused) upstream.resume();
    });
    if (paused) pause(pair);
    // Either side ending or failing ends both, abruptly: what a dropped connection looks like.
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();

  return {
    port,
    stats,
    url: (path = '/graphql') => `ws://127.0.0.1:${port}${path}`,
    /** Connections currently forwarded. */
    get live() {
      return pairs.size;
    },
    /** Destroys every forwarded connection, both sides (clients see 1006). Returns how many. */
    dropAll() {
      const n = pairs.size;
      for (const { client, upstream } of [...pairs]) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
      stats.dropped += n;
      return n;
    },
    /** Refuses (accepts and at once destroys) new connections until `release()`. */
    hold() {
      holding = true;
    },
    release() {
      holding = false;
    },
    /** Stops forwarding server → client on every connection, present and future. */
    pauseDownstream() {
      paused = true;
      for (const pair of pairs) pause(pair);
    },
    resumeDownstream() {
      paused = false;
      for (const { upstream } of pairs) upstream.resume();
    },
    close() {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

module.exports = { startProxy };
