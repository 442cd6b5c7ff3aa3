import { CursorStore } from './cursors.js';
import type { CursorStorage } from './cursors.js';
import { SwitchboardError } from './errors.js';
import type { GraphQLErrorLike } from './errors.js';
/** What a subscription (or any operation) sends. */
export interface SubscribePayload {
    readonly query: string;
    readonly variables?: Record<string, unknown> | null;
    readonly operationName?: string | null;
    readonly extensions?: Record<string, unknown> | null;
}
/** One result, as graphql-ws and graphql-sse deliver it. */
export interface ExecutionResultLike {
    data?: unknown;
    errors?: readonly GraphQLErrorLike[];
    extensions?: unknown;
}
export interface Sink<T = ExecutionResultLike> {
    next(value: T): void;
    /** Always a {@link SwitchboardError} when it comes from this package's clients. */
    error(error: unknown): void;
    complete(): void;
}
/** What the app may have missed: refetch what it shows. */
export interface ResetEvent {
    /**
     * - `CURSOR_EXPIRED`: the subscription was too far behind to replay (older than the server's
     *   retention, or more events than one resume may replay); it has started again from now.
     * - `NO_CURSOR`: a subscription that had no position (the server gave none) was cut off and
     *   started again live.
     */
    reason: 'CURSOR_EXPIRED' | 'NO_CURSOR';
    request: SubscribePayload;
    error?: SwitchboardError;
}
/** What the resumable clients add to the options of graphql-ws's and graphql-sse's `createClient`. */
export interface ResumeOptions {
    /**
     * Keeps each live subscription's cursor across a page reload: `sessionStorage` in a browser,
     * or anything with `getItem`/`setItem`/`removeItem`. Off by default.
     */
    storage?: CursorStorage | null;
    /** The keys' prefix in `storage` (default `switchboard.cursor:`). */
    storagePrefix?: string;
    /** A subscription may have missed events (see {@link ResetEvent}): refetch what it shows. */
    onReset?: (event: ResetEvent) => void;
    /**
     * Problems the client got over by itself (a failed `eventCursor` query, a storage that threw),
     * for logs. Failures of an operation go to its sink's `error`.
     */
    onError?: (error: SwitchboardError) => void;
}
/** The query that names the server's position now. */
export declare const EVENT_CURSOR_QUERY = "query SwitchboardEventCursor { eventCursor }";
/** How a transport carries operations. */
export interface Transport {
    /**
     * Where a subscription without a cursor starts: a promise of the server's position now, or
     * `undefined` when the transport gives it one itself before sending it (graphql-ws's ack).
     */
    startCursor(): Promise<string> | undefined;
    /** Sends the operation's payload; returns what stops it. */
    subscribe(operation: Operation, sink: Sink): () => void;
    /**
     * graphql-sse: a result with errors and no data ends the stream (the protocol has no `error`
     * message). `SLOW_CONSUMER` is followed by the end of the stream, which the client retries:
     * it is not passed on.
     */
    readonly errorsInResults: boolean;
}
/** What every operation of one client shares. */
export interface Shared {
    readonly store: CursorStore;
    readonly options: ResumeOptions;
    report(error: unknown): void;
}
export declare class Operation {
    #private;
    /** The payload as the app gave it. */
    readonly request: SubscribePayload;
    /** What is sent: the app's payload with its own `variables`, whose `after` this keeps current. */
    readonly payload: {
        query: string;
        variables: Record<string, unknown>;
        operationName?: string | null;
        extensions?: Record<string, unknown> | null;
    };
    /** Declares `$after: String`: kept at its cursor. Other operations pass through untouched. */
    readonly resumable: boolean;
    readonly key: string;
    cursor: string | undefined;
    /**
     * graphql-ws: the subscribe may already be on the current connection (it was sent after an
     * ack). One that is not yet waits for the next ack, which gives it its starting cursor.
     */
    sent: boolean;
    constructor(request: SubscribePayload, transport: Transport, sink: Sink, shared: Shared);
    /** Starts it (a kept cursor first, else the server's position); failures go to the sink. */
    start(): () => void;
    /** The app stops it: nothing more reaches its sink, and its kept cursor is forgotten. */
    stop(): void;
    setCursor(cursor: string, keep?: boolean): void;
    /** Tells the app that this one may have missed events, from outside (graphql-ws's ack). */
    reportReset(event: ResetEvent): void;
}
/** A fresh {@link Shared} for one client. */
export declare function shared(options: ResumeOptions): Shared;
/** `iterate` for a client whose `subscribe` is given: results as an async iterator. */
export declare function iterate<T>(subscribe: (sink: Sink<T>) => () => void): AsyncIterableIterator<T>;
/** `resolve`'s answer to an `eventCursor` query, or the error it got. */
export declare function eventCursorFrom(result: ExecutionResultLike): string;
/** Runs the `eventCursor` query through a client's `subscribe`. */
export declare function queryEventCursor(subscribe: (payload: SubscribePayload, sink: Sink) => () => void): Promise<string>;
