// graphql-ws, resuming: a graphql-ws client whose subscriptions never lose an event across a
// reconnect, behind graphql-ws's own `Client` interface (so Apollo's GraphQLWsLink, urql's
// subscriptionExchange and anything else written for graphql-ws take it as it is).
//
// This module imports nothing at run time: it is handed graphql-ws's `createClient`, so that it
// runs unchanged in a browser page that loads graphql-ws from its own copy (the console does)
// and in Node (`@switchboard/client/graphql-ws` hands it the package's).
//
// Where a subscription starts: graphql-ws sends a subscribe only after `connection_ack`, and calls
// its `connected` listeners before it sends the subscribes waiting for that ack. Switchboard's ack
// carries where a subscription made now starts (`{"cursor": …}`: the last change the server has
// delivered, on one node its event log's head): a subscription waiting for the ack
// takes that cursor as `after` there and then. One started on a connection already acknowledged
// asks `eventCursor` first, over the same socket. Either way it is sent with a position.

import type { Client, ClientOptions, FormattedExecutionResult, Sink as WsSink, SubscribePayload as WsSubscribePayload } from 'graphql-ws';
import { backoffDelay, sleep } from './cursors.js';
import type { BackoffOptions } from './cursors.js';
import { handled } from './errors.js';
import { Operation, iterate, queryEventCursor, shared } from './operation.js';
import type { ResumeOptions, Sink, Transport } from './operation.js';

export interface ResumableWsOptions extends ClientOptions, ResumeOptions {
  /**
   * How many `4403` closes in a row (a refused or expired token) are retried, running
   * `connectionParams` again each time for a fresh token, before every subscription fails with
   * an `auth` error (default 2).
   */
  authRetries?: number;
  /** The waits between reconnection attempts, unless `retryWait` is given (default 0.5 s to 10 s). */
  backoff?: BackoffOptions;
}

/** A graphql-ws client whose subscriptions resume; `eventCursor()` names the server's position now. */
export interface ResumableClient extends Client {
  eventCursor(): Promise<string>;
}

type CreateClient = (options: ClientOptions) => Client;

function closeCode(value: unknown): number | undefined {
  return typeof value === 'object' && value !== null && typeof (value as { code?: unknown }).code === 'number'
    ? (value as { code: number }).code
    : undefined;
}

/**
 * Makes a graphql-ws client with `createClient` (graphql-ws's own) whose subscriptions resume.
 *
 * Different defaults from graphql-ws's, for an app that must not lose events: it retries every
 * failure, including an attempt that cannot connect at all (graphql-ws retries close events
 * only), with no limit on attempts (`retryAttempts: Infinity`), waiting 0.25–0.5 s at first and
 * at most 10 s (jittered). A refused token (`4403`) is retried `authRetries` times. Every option
 * of graphql-ws can still be given and wins.
 */
export function resumableGraphqlWs(createClient: CreateClient, options: ResumableWsOptions): ResumableClient {
  const { storage, storagePrefix, onReset, onError, authRetries = 2, backoff, ...clientOptions } = options;
  const context = shared({
    ...(storage === undefined ? {} : { storage }),
    ...(storagePrefix === undefined ? {} : { storagePrefix }),
    ...(onReset === undefined ? {} : { onReset }),
    ...(onError === undefined ? {} : { onError }),
  });
  const live = new Set<Operation>();
  /** An ack was received on the current connection (and it has not closed since). */
  let acked = false;
  let refusals = 0;
  const on = clientOptions.on ?? {};
  const shouldRetry = clientOptions.shouldRetry ?? (() => true);

  const client = createClient({
    retryAttempts: Infinity,
    retryWait: (retries) => sleep(backoffDelay(retries, backoff)),
    ...clientOptions,
    shouldRetry(errOrCloseEvent) {
      if (closeCode(errOrCloseEvent) === 4403) {
        refusals += 1;
        if (refusals > authRetries) return false;
      }
      return shouldRetry(errOrCloseEvent);
    },
    on: {
      ...on,
      connecting(...args) {
        acked = false;
        on.connecting?.(...args);
      },
      connected(socket, payload, wasRetry) {
        acked = true;
        refusals = 0;
        acknowledged(payload, wasRetry);
        on.connected?.(socket, payload, wasRetry);
      },
      closed(event) {
        acked = false;
        on.closed?.(event);
      },
    },
  });

  /** The ack: subscriptions about to be sent start at its cursor. */
  function acknowledged(payload: unknown, wasRetry: boolean): void {
    const given = typeof payload === 'object' && payload !== null ? (payload as { cursor?: unknown }).cursor : undefined;
    const cursor = typeof given === 'string' && given !== '' ? given : undefined;
    for (const operation of live) {
      if (!operation.resumable) continue;
      if (!operation.sent) {
        if (!operation.cursor && cursor) operation.setCursor(cursor);
      } else if (!operation.cursor) {
        // It ran live without a position (the server gave none) and the connection dropped:
        // whatever happened meanwhile is gone. From now on it has one.
        if (cursor) operation.setCursor(cursor);
        if (wasRetry) operation.reportReset({ reason: 'NO_CURSOR', request: operation.request });
      }
    }
    for (const operation of live) operation.sent = true;
  }

  const subscribeRaw = (payload: WsSubscribePayload, sink: Sink): (() => void) =>
    client.subscribe(payload, sink as WsSink<FormattedExecutionResult>);
  const eventCursor = (): Promise<string> => queryEventCursor(subscribeRaw);

  const transport: Transport = {
    errorsInResults: false,
    startCursor: () => (acked ? eventCursor() : undefined),
    subscribe(operation, sink) {
      operation.sent = acked;
      live.add(operation);
      const stop = subscribeRaw(operation.payload, sink);
      return () => {
        live.delete(operation);
        stop();
      };
    },
  };

  function subscribe<Data = Record<string, unknown>, Extensions = unknown>(
    payload: WsSubscribePayload,
    sink: WsSink<FormattedExecutionResult<Data, Extensions>>,
  ): () => void {
    return new Operation(payload, transport, sink as Sink, context).start();
  }

  return {
    ...client,
    on: client.on,
    dispose: client.dispose,
    terminate: client.terminate,
    subscribe,
    iterate: <Data = Record<string, unknown>, Extensions = unknown>(payload: WsSubscribePayload) =>
      iterate<FormattedExecutionResult<Data, Extensions>>((sink) => subscribe(payload, sink)),
    eventCursor: () => handled(eventCursor()),
  };
}
