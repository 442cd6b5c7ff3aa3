// One error type for everything that goes wrong between an app and Switchboard, whichever the
// transport: switch on `kind` first, then on `code`. Every failure reaches the app as one of
// these (through a sink's `error`, a rejected promise that is also marked handled, or an `error`
// event), never as an unhandled rejection.
export class SwitchboardError extends Error {
    kind;
    code;
    /** The GraphQL errors, for `kind: 'graphql'`. */
    errors;
    /** The WebSocket close code, when a close caused it. */
    closeCode;
    /** The HTTP status, when a response caused it. */
    status;
    /** The room the refused message was about. */
    roomId;
    constructor(kind, code, message, details = {}) {
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
    static is(error) {
        return error instanceof SwitchboardError || (isObject(error) && error['name'] === 'SwitchboardError' && typeof error['kind'] === 'string');
    }
}
function isObject(value) {
    return typeof value === 'object' && value !== null;
}
/** The `extensions.code` of the first error that has one. */
export function errorCode(errors) {
    for (const error of errors ?? []) {
        const code = error.extensions?.['code'];
        if (typeof code === 'string')
            return code;
    }
    return undefined;
}
/** A SwitchboardError for a list of GraphQL errors. */
export function graphqlError(errors) {
    const code = errorCode(errors) ?? 'GRAPHQL_ERROR';
    return new SwitchboardError('graphql', code, errors[0]?.message ?? code, { errors });
}
function isCloseLike(value) {
    return isObject(value) && typeof value['code'] === 'number' && 'reason' in value;
}
/** What the graphql-ws and graphql-sse clients hand to a sink's `error`, as a SwitchboardError. */
export function toSwitchboardError(error) {
    if (SwitchboardError.is(error))
        return error;
    if (Array.isArray(error) && error.every((e) => isObject(e) && typeof e['message'] === 'string')) {
        return graphqlError(error);
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
    if (status === 401)
        return new SwitchboardError('auth', 'UNAUTHENTICATED', 'the server refused the token (401)', { status, cause: error });
    if (status === 403)
        return new SwitchboardError('auth', 'FORBIDDEN', 'the server refused the request (403)', { status, cause: error });
    const message = error instanceof Error ? error.message : isObject(error) && typeof error['message'] === 'string' ? error['message'] : 'network error';
    return new SwitchboardError('network', 'NETWORK_ERROR', message || 'network error', { ...(status === undefined ? {} : { status }), cause: error });
}
/**
 * Marks a promise as handled without changing it: an app that awaits it still sees the
 * rejection, and one that ignores it does not get an unhandled rejection.
 */
export function handled(promise) {
    promise.catch(() => { });
    return promise;
}
