import type { Client, ClientOptions } from 'graphql-ws';
import type { BackoffOptions } from './cursors.js';
import type { ResumeOptions } from './operation.js';
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
/**
 * Makes a graphql-ws client with `createClient` (graphql-ws's own) whose subscriptions resume.
 *
 * Different defaults from graphql-ws's, for an app that must not lose events: it retries every
 * failure, including an attempt that cannot connect at all (graphql-ws retries close events
 * only), with no limit on attempts (`retryAttempts: Infinity`), waiting 0.25–0.5 s at first and
 * at most 10 s (jittered). A refused token (`4403`) is retried `authRetries` times. Every option
 * of graphql-ws can still be given and wins.
 */
export declare function resumableGraphqlWs(createClient: CreateClient, options: ResumableWsOptions): ResumableClient;
export {};
