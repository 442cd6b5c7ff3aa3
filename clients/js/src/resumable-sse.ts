// graphql-sse, resuming: the same rule as over graphql-ws (see operation.ts), for networks where
// WebSockets are not an option. graphql-sse re-sends the same request object on every retry
// (distinct connections: the body is serialised afresh each time; single connection: the
// operation's variables object is shared with the copy it POSTs), so keeping `variables.after`
// at the last cursor makes each retry a resume. A new subscription asks `eventCursor` first,
// through the same client, and is sent with it.
//
// Like resumable-ws.ts, this imports nothing at run time: it is handed graphql-sse's
// `createClient` (`@switchboard/client/graphql-sse` hands it the package's).

import type { Client, ClientOptions, ExecutionResult, RequestParams, Sink as SseSink } from 'graphql-sse';
import { backoffDelay, sleep } from './cursors.js';
import type { BackoffOptions } from './cursors.js';
import { SwitchboardError, handled } from './errors.js';
import { Operation, iterate, queryEventCursor, shared } from './operation.js';
import type { ResumeOptions, Sink, SubscribePayload, Transport } from './operation.js';

export interface ResumableSseOptions<SingleConnection extends boolean = false> extends ClientOptions<SingleConnection>, ResumeOptions {
  /**
   * How many refusals of the token in a row (`401`/`403`) are retried, calling `headers` again
   * for a fresh token each time, before the operations fail with an `auth` error (default 2).
   */
  authRetries?: number;
  /** The waits between attempts, unless `retry` is given (default 0.5 s to 10 s, jittered). */
  backoff?: BackoffOptions;
}

export interface ResumableSseClient<SingleConnection extends boolean = false> extends Client<SingleConnection> {
  eventCursor(): Promise<string>;
}

type FetchLike = (input: string, init?: Record<string, unknown>) => Promise<{ ok: boolean; status: number }>;

/** graphql-sse's `NetworkError` class: the errors its client retries. */
export type NetworkErrorClass = new (cause: string | Error) => Error;

/**
 * Makes a graphql-sse client with `createClient` (graphql-sse's own) whose subscriptions resume.
 * Defaults differ from graphql-sse's as for graphql-ws: unlimited attempts, with jittered waits
 * from 0.25 s up to 10 s; a refused token is retried `authRetries` times.
 *
 * `NetworkError` (graphql-sse's, which `@switchboard/client/graphql-sse` hands) makes an event
 * stream that breaks always a retry: graphql-sse (2.6) retries a broken stream only if an
 * operation was waiting on it at that very moment, and otherwise hands the error to the
 * operation as final. In single-connection mode a stream that drops between its `200` and the
 * operation's `202` (the `POST` goes on another connection) thus ended the subscription with
 * "terminated".
 */
export function resumableGraphqlSse<SingleConnection extends boolean = false>(
  createClient: (options: ClientOptions<SingleConnection>) => Client<SingleConnection>,
  options: ResumableSseOptions<SingleConnection>,
  NetworkError?: NetworkErrorClass,
): ResumableSseClient<SingleConnection> {
  const { storage, storagePrefix, onReset, onError, authRetries = 2, backoff, ...clientOptions } = options;
  const context = shared({
    ...(storage === undefined ? {} : { storage }),
    ...(storagePrefix === undefined ? {} : { storagePrefix }),
    ...(onReset === undefined ? {} : { onReset }),
    ...(onError === undefined ? {} : { onError }),
  });

  // graphql-sse retries every "network error", a refused token included: count the refusals in
  // a row, as the responses go by, and stop retrying past `authRetries`.
  let refusals = 0;
  let refusedWith = 0;
  const fetchFn = (clientOptions.fetchFn as FetchLike | undefined) ?? ((input, init) => (globalThis.fetch as unknown as FetchLike)(input, init));
  const watchedFetch: FetchLike = async (input, init) => {
    const response = await fetchFn(input, init);
    if (response.status === 401 || response.status === 403) {
      refusals += 1;
      refusedWith = response.status;
    } else if (response.ok) {
      refusals = 0;
    }
    return NetworkError ? retryableStream(response, init, NetworkError) : response;
  };
  const wait = clientOptions.retry ?? ((retries: number) => sleep(backoffDelay(retries, backoff)));

  const client = createClient({
    retryAttempts: Infinity,
    ...clientOptions,
    fetchFn: watchedFetch,
    async retry(retries) {
      if (refusals > authRetries) {
        // Not a NetworkError: graphql-sse hands it to the operation's sink instead of retrying.
        throw refusedWith === 401
          ? new SwitchboardError('auth', 'UNAUTHENTICATED', 'the server refused the token (401)', { status: 401 })
          : new SwitchboardError('auth', 'FORBIDDEN', 'the server refused the request (403)', { status: refusedWith });
      }
      await wait(retries);
    },
  });

  const subscribeRaw = (payload: SubscribePayload, sink: Sink): (() => void) =>
    client.subscribe(payload as RequestParams, sink as SseSink<ExecutionResult>);
  const eventCursor = (): Promise<string> => queryEventCursor(subscribeRaw);

  const transport: Transport = {
    errorsInResults: true,
    startCursor: eventCursor,
    subscribe: (operation, sink) => subscribeRaw(operation.payload, sink),
  };

  function subscribe<Data = Record<string, unknown>, Extensions = unknown>(
    request: RequestParams,
    sink: SseSink<ExecutionResult<Data, Extensions>>,
  ): () => void {
    return new Operation(request, transport, sink as Sink, context).start();
  }

  return {
    ...client,
    dispose: client.dispose,
    subscribe,
    iterate: <Data = Record<string, unknown>, Extensions = unknown>(request: RequestParams) =>
      iterate<ExecutionResult<Data, Extensions>>((sink) => subscribe(request, sink)),
    eventCursor: () => handled(eventCursor()),
  };
}

/**
 * An event stream's response whose body, if the network breaks it, fails with a `NetworkError`
 * (which graphql-sse retries, whenever it reads it) rather than the fetch's own error (which it
 * retries only if an operation was waiting at that moment). A single-connection stream that ends
 * (the server closes it) fails the same way: graphql-sse would otherwise take it for open while
 * no operation was waiting, and an operation `POST`ed to it would wait forever. Anything else
 * passes as it is.
 */
function retryableStream(
  response: { ok: boolean; status: number },
  init: Record<string, unknown> | undefined,
  NetworkError: NetworkErrorClass,
): { ok: boolean; status: number } {
  const headers = init?.['headers'] as Record<string, string> | undefined;
  const body = (response as { body?: unknown }).body;
  if (
    !response.ok ||
    headers?.['accept'] !== 'text/event-stream' ||
    typeof Response !== 'function' ||
    typeof ReadableStream !== 'function' ||
    !(body instanceof ReadableStream)
  ) {
    return response;
  }
  const signal = init?.['signal'] as AbortSignal | undefined;
  // The single connection's stream (a `GET` with the reservation's token); a distinct one ends
  // after its operation's `complete`.
  const single = init?.['method'] === 'GET' && headers?.[TOKEN_HEADER] !== undefined;
  const reader = (body as ReadableStream<Uint8Array>).getReader();
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (error) {
        controller.error(signal?.aborted ? error : new NetworkError(error instanceof Error ? error : String(error)));
        return;
      }
      if (!chunk.done) controller.enqueue(chunk.value);
      else if (single && !signal?.aborted) controller.error(new NetworkError('the event stream ended'));
      else controller.close();
    },
    cancel: (reason) => reader.cancel(reason),
  });
  const { status, statusText, headers: responseHeaders } = response as unknown as Response;
  return new Response(stream, { status, statusText, headers: responseHeaders });
}

/** graphql-sse's `TOKEN_HEADER_KEY`. */
const TOKEN_HEADER = 'x-graphql-event-stream-token';
