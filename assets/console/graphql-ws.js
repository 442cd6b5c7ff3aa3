// A small graphql-transport-ws client (the protocol of the graphql-ws library), written out so
// that the console needs no build step and no download. It does what the console needs and no
// more: one socket, `connection_init` with a payload, subscriptions by id, `ping` answered with
// `pong`. It does not reconnect by itself: the page decides what a close means (see console.js).
//
//   const socket = connect('ws://host/graphql', { authorization: 'Bearer <jwt>' }, {
//     onAck() { socket.subscribe('subscription { ... }', {}, { next, error, complete }); },
//     onClose(code, reason) { ... },
//   });

/** Opens `url` and sends `connection_init` with `payload`; `handlers.onAck` runs once acknowledged. */
export function connect(url, payload, handlers = {}) {
  const ws = new WebSocket(url, 'graphql-transport-ws');
  const sinks = new Map();
  let nextId = 1;
  let acked = false;
  let closed = false;

  const send = (message) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  };

  ws.addEventListener('open', () => send({ type: 'connection_init', payload }));
  ws.addEventListener('message', (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      ws.close(4400, 'Invalid message received');
      return;
    }
    switch (message.type) {
      case 'connection_ack':
        acked = true;
        handlers.onAck?.();
        break;
      case 'ping':
        send({ type: 'pong', payload: message.payload });
        break;
      case 'next':
        sinks.get(message.id)?.next?.(message.payload);
        break;
      case 'error': {
        // Refused before it ran (validation, authorization): no `complete` follows.
        const sink = sinks.get(message.id);
        sinks.delete(message.id);
        sink?.error?.(message.payload);
        break;
      }
      case 'complete': {
        const sink = sinks.get(message.id);
        sinks.delete(message.id);
        sink?.complete?.();
        break;
      }
      default:
        break; // `pong` and anything newer: nothing to do
    }
  });
  ws.addEventListener('close', (event) => {
    if (closed) return;
    closed = true;
    sinks.clear();
    handlers.onClose?.(event.code, event.reason, acked);
  });

  return {
    /** Starts an operation; returns a function that stops it. */
    subscribe(query, variables, sink) {
      const id = String(nextId++);
      sinks.set(id, sink);
      send({ id, type: 'subscribe', payload: { query, variables } });
      return () => {
        if (sinks.delete(id)) send({ id, type: 'complete' });
      };
    },
    /** Closes the socket (1000); `onClose` is not called for a close the page asked for. */
    close() {
      closed = true;
      sinks.clear();
      ws.close(1000, 'Normal Closure');
    },
  };
}
