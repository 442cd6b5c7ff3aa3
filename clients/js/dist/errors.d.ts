/** A GraphQL error as the server sends it. */
export interface GraphQLErrorLike {
    readonly message: string;
    readonly locations?: readonly {
        readonly line: number;
        readonly column: number;
    }[];
    readonly path?: readonly (string | number)[];
    readonly extensions?: {
        readonly [key: string]: unknown;
    };
}
/**
 * - `graphql`: the server refused or failed an operation; `code` is the first error's
 *   `extensions.code` (`FORBIDDEN`, `NOT_FOUND`, `BAD_USER_INPUT`, ...) and `errors` has them all.
 * - `auth`: the token was refused: `FORBIDDEN` (graphql-ws close 4403) or `UNAUTHENTICATED`
 *   (HTTP 401, on SSE and `/ws`), after the configured retries with a fresh token.
 * - `closed`: the connection closed with a code the client does not retry (`closeCode`), or
 *   it gave up retrying.
 * - `network`: the server could not be reached, or answered something unexpected (`status`).
 * - `room`: the room channel refused a message (`BAD_REQUEST`, `FORBIDDEN`, `NOT_FOUND`,
 *   `RATE_LIMITED`, `INTERNAL_SERVER_ERROR`); `roomId` names the room when the message had one.
 * - `client`: the client itself was used after `close()`/`dispose()`.
 */
export type ErrorKind = 'graphql' | 'auth' | 'closed' | 'network' | 'room' | 'client';
export interface ErrorDetails {
    errors?: readonly GraphQLErrorLike[];
    closeCode?: number;
    status?: number;
    roomId?: string;
    cause?: unknown;
}
export declare class SwitchboardError extends Error {
    readonly kind: ErrorKind;
    readonly code: string;
    /** The GraphQL errors, for `kind: 'graphql'`. */
    readonly errors: readonly GraphQLErrorLike[] | undefined;
    /** The WebSocket close code, when a close caused it. */
    readonly closeCode: number | undefined;
    /** The HTTP status, when a response caused it. */
    readonly status: number | undefined;
    /** The room the refused message was about. */
    readonly roomId: string | undefined;
    constructor(kind: ErrorKind, code: string, message: string, details?: ErrorDetails);
    /** Whether `error` is a SwitchboardError (also across copies of this package). */
    static is(error: unknown): error is SwitchboardError;
}
/** The `extensions.code` of the first error that has one. */
export declare function errorCode(errors: readonly GraphQLErrorLike[] | undefined): string | undefined;
/** A SwitchboardError for a list of GraphQL errors. */
export declare function graphqlError(errors: readonly GraphQLErrorLike[]): SwitchboardError;
/** What the graphql-ws and graphql-sse clients hand to a sink's `error`, as a SwitchboardError. */
export declare function toSwitchboardError(error: unknown): SwitchboardError;
/**
 * Marks a promise as handled without changing it: an app that awaits it still sees the
 * rejection, and one that ignores it does not get an unhandled rejection.
 */
export declare function handled<T>(promise: Promise<T>): Promise<T>;
