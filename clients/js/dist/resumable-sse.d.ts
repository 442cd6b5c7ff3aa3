import type { Client, ClientOptions } from 'graphql-sse';
import type { BackoffOptions } from './cursors.js';
import type { ResumeOptions } from './operation.js';
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
export declare function resumableGraphqlSse<SingleConnection extends boolean = false>(createClient: (options: ClientOptions<SingleConnection>) => Client<SingleConnection>, options: ResumableSseOptions<SingleConnection>, NetworkError?: NetworkErrorClass): ResumableSseClient<SingleConnection>;
