// One error type for everything that goes wrong between an app and Switchboard, whichever the
// transport: switch on `kind` first, then on `code`. Every failure reaches the app as one of
// these (through a sink's `error`, a rejected promise that is also marked handled, or an `error`
// event), never as an unhandled rejection.

/** A GraphQL error as the server sends it. */
export interface GraphQLErrorLike {
  readonly message: string;
  readonly locations?: readonly { readonly line: number; readonly column: number }[];
  readonly path?: readonly (string | number)[];
  readonly extensions?: { readonly [key: string]: unknown };
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

export class SwitchboardError extends Error {
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

  constructor(kind: ErrorKind, code: string, message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'SwitchboardError';
    this.kind = kind;
    this.code = code;
    this.errors = details.errors;
    this.closeCode = details.closeCode;
    this.status = details.status;
    this.roomId = details.roomId;
  }

  /** Whether `error` is a SwitchboardError (also across copies of this package). */
  static is(error: unknown): error is SwitchboardError {
    return error instanceof SwitchboardError || (isObject(error) && error['name'] === 'SwitchboardError' && typeof error['kind'] === 'string');
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

/** The `extensions.code` of the first error that has one. */
export function errorCode(errors: readonly GraphQLErrorLike[] | undefined): string | undefined {
  for (const error of errors ?? []) {
    const code = error.extensions?.['code'];
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/** A SwitchboardError for a list of GraphQL errors. */
export function graphqlError(errors: readonly GraphQLErrorLike[]): SwitchboardError {
  const code = errorCode(errors) ?? 'GRAPHQL_ERROR';
  return new SwitchboardError('graphql', code, errors[0]?.message ?? code, { errors });
}

function isCloseLike(value: unknown): value is { code: number; reason: string } {
  return isObject(value) && typeof value['code'] === 'number' && 'reason' in value;
}

/** What the graphql-ws and graphql-sse clients hand to a sink's `error`, as a SwitchboardError. */
export function toSwitchboardError(error: unknown): SwitchboardError {
  if (SwitchboardError.is(error)) return error;
  if (Array.isArray(error) && error.every((e) => isObject(e) && typeof e['message'] === 'string')) {
    return graphqlError(error as GraphQLErrorLike[]);
  }
  if (isCloseLike(error)) {
    const reason = String(error.reason || '');
    if (error.code === 4403) {
      return new SwitchboardError('auth', 'FORBIDDEN', reason || 'the server refused the token', { closeCode: 4403, cause: error });
    }
    return new SwitchboardError('closed', 'CONNECTION_CLOSED', `the connection closed (${error.code}${reason ? ` ${reason}` : ''})`, {
      closeCode: error.code,
      cause: error,
    });
  }
  // graphql-sse's NetworkError carries the response that was not what it expected.
  const response = isObject(error) && isObject(error['response']) ? error['response'] : undefined;
  const status = typeof response?.['status'] === 'number' ? response['status'] : undefined;
  if (status === 401) return new SwitchboardError('auth', 'UNAUTHENTICATED', 'the server refused the token (401)', { status, cause: error });
  if (status === 403) return new SwitchboardError('auth', 'FORBIDDEN', 'the server refused the request (403)', { status, cause: error });
  const message = error instanceof Error ? error.message : isObject(error) && typeof error['message'] === 'string' ? error['message'] : 'network error';
  return new SwitchboardError('network', 'NETWORK_ERROR', message || 'network error', { ...(status === undefined ? {} : { status }), cause: error });
}

/**
 * Marks a promise as handled without changing it: an app that awaits it still sees the
 * rejection, and one that ignores it does not get an unhandled rejection.
 */
export function handled<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => {});
  return promise;
}
