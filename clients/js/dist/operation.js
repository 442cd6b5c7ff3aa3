// One subscription that resumes, whatever carries it (graphql-ws or graphql-sse).
//
// The rule: a subscription that declares `$after: String` always has a cursor before it is sent,
// and keeps `variables.after` at the latest one. It starts from the server's position (the
// cursor of the event log's head, from graphql-ws's `connection_ack` or `Query.eventCursor`), and
// moves to each event's `cursor` as results arrive. The graphql-ws and graphql-sse clients re-send
// the *same* payload object on every retry, so every retry is a resume: no event is lost, even to
// a drop before the first one. `CURSOR_EXPIRED` (too far behind) starts it afresh from the
// server's position now and tells the app (`onReset`) to refetch what it shows.
import { CursorStore, declaresAfter, operationKey, rootCursor } from './cursors.js';
import { SwitchboardError, graphqlError, toSwitchboardError } from './errors.js';
/** The query that names the server's position now. */
export const EVENT_CURSOR_QUERY = 'query SwitchboardEventCursor { eventCursor }';
/** How many `CURSOR_EXPIRED` in a row, without a result in between, before giving up. */
const RESETS_IN_A_ROW = 3;
/** graphql-sse: how many token-expiry ends of a running stream in a row are resumed. */
const EXPIRY_RESUMES_IN_A_ROW = 2;
export class Operation {
    /** The payload as the app gave it. */
    request;
    /** What is sent: the app's payload with its own `variables`, whose `after` this keeps current. */
    payload;
    /** Declares `$after: String`: kept at its cursor. Other operations pass through untouched. */
    resumable;
    key;
    cursor;
    /**
     * graphql-ws: the subscribe may already be on the current connection (it was sent after an
     * ack). One that is not yet waits for the next ack, which gives it its starting cursor.
     */
    sent = false;
    #transport;
    #sink;
    #shared;
    #generation = 0;
    #stopInner = null;
    #over = false;
    #resets = 0;
    #expiryResumes = 0;
    #results = 0;
    #warned = false;
    constructor(request, transport, sink, shared) {
        this.request = request;
        this.payload = { ...request, query: request.query, variables: { ...(request.variables ?? {}) } };
        this.resumable = declaresAfter(request.query);
        this.key = operationKey(request.query, request.variables, request.operationName);
        const given = request.variables?.['after'];
        this.cursor = this.resumable && typeof given === 'string' && given !== '' ? given : undefined;
        this.#transport = transport;
        this.#sink = sink;
        this.#shared = shared;
    }
    /** Starts it (a kept cursor first, else the server's position); failures go to the sink. */
    start() {
        this.#launch(false);
        return () => this.stop();
    }
    /** Begins an underlying subscription; whatever goes wrong on the way is reported, never thrown. */
    #launch(fresh, then) {
        this.#begin(fresh)
            .then(then)
            .catch((error) => this.#shared.report(error));
    }
    /** The app stops it: nothing more reaches its sink, and its kept cursor is forgotten. */
    stop() {
        if (this.#over)
            return;
        this.#end();
    }
    setCursor(cursor, keep = true) {
        if (!this.resumable)
            return;
        this.cursor = cursor;
        this.payload.variables['after'] = cursor;
        if (keep)
            this.#shared.store.set(this.key, cursor);
    }
    #clearCursor() {
        this.cursor = undefined;
        delete this.payload.variables['after'];
        this.#shared.store.remove(this.key);
    }
    async #begin(fresh) {
        try {
            if (this.resumable && !this.cursor && !fresh) {
                const kept = await this.#shared.store.get(this.key);
                if (kept && !this.cursor)
                    this.setCursor(kept, false);
            }
            if (this.resumable && !this.cursor) {
                // No `await` unless there is something to wait for: graphql-ws's "not connected yet"
                // answer must still hold when the subscribe is handed over, in the same turn.
                const position = this.#transport.startCursor();
                if (position) {
                    try {
                        const cursor = await position;
                        if (!this.cursor)
                            this.setCursor(cursor);
                    }
                    catch (error) {
                        // Subscribed live then: a drop before its first event would be reported (NO_CURSOR).
                        this.#shared.report(error);
                    }
                }
            }
            if (this.#over)
                return;
            const generation = ++this.#generation;
            this.#stopInner = this.#transport.subscribe(this, this.#sinkFor(generation));
        }
        catch (error) {
            if (!this.#over)
                this.#fail(toSwitchboardError(error));
        }
    }
    /** A sink for one underlying subscription: once it is replaced or stopped, it hears nothing. */
    #sinkFor(generation) {
        const current = () => !this.#over && generation === this.#generation;
        return {
            next: (result) => {
                if (!current())
                    return;
                if (this.#transport.errorsInResults && result?.errors?.length && result.data == null) {
                    this.#failed(graphqlError(result.errors));
                    return;
                }
                const cursor = rootCursor(result);
                if (cursor)
                    this.setCursor(cursor);
                else if (this.resumable && !this.#warned && result.data != null) {
                    // Without `cursor` in the selection a retry would resume from where it started.
                    this.#warned = true;
                    this.#shared.report(new SwitchboardError('client', 'NO_CURSOR_SELECTED', 'a subscription declaring $after must select `cursor` on its root field to resume'));
                }
                this.#resets = 0;
                this.#expiryResumes = 0;
                this.#results += 1;
                this.#sink.next(result);
            },
            error: (error) => {
                if (current())
                    this.#failed(toSwitchboardError(error));
            },
            complete: () => {
                if (!current())
                    return;
                this.#end();
                this.#sink.complete();
            },
        };
    }
    #failed(error) {
        const code = error.kind === 'graphql' ? error.code : '';
        if (this.#transport.errorsInResults && code === 'SLOW_CONSUMER')
            return;
        if (this.resumable && code === 'CURSOR_EXPIRED' && this.#resets < RESETS_IN_A_ROW) {
            this.#resets += 1;
            this.#replace();
            this.#clearCursor();
            this.#launch(true, () => this.#notifyReset({ reason: 'CURSOR_EXPIRED', request: this.request, error }));
            return;
        }
        // graphql-sse: a stream that ran until its token expired ends with UNAUTHENTICATED; the next
        // request takes a fresh token from `headers` and resumes where it stopped.
        if (this.#transport.errorsInResults && code === 'UNAUTHENTICATED' && this.#results > 0 && this.#expiryResumes < EXPIRY_RESUMES_IN_A_ROW) {
            this.#expiryResumes += 1;
            this.#replace();
            this.#launch(true);
            return;
        }
        this.#fail(error);
    }
    #fail(error) {
        this.#end();
        this.#sink.error(error);
    }
    /** Stops the underlying subscription so that a new one can take its place. */
    #replace() {
        this.#generation += 1;
        const stop = this.#stopInner;
        this.#stopInner = null;
        stop?.();
    }
    #end() {
        this.#over = true;
        this.#replace();
        if (this.resumable)
            this.#shared.store.remove(this.key);
    }
    #notifyReset(event) {
        if (this.#over)
            return;
        try {
            this.#shared.options.onReset?.(event);
        }
        catch (error) {
            this.#shared.report(error);
        }
    }
    /** Tells the app that this one may have missed events, from outside (graphql-ws's ack). */
    reportReset(event) {
        this.#notifyReset(event);
    }
}
/** A fresh {@link Shared} for one client. */
export function shared(options) {
    const report = (error) => {
        try {
            options.onError?.(toSwitchboardError(error));
        }
        catch {
            // An app's logger that throws is not the client's problem to surface.
        }
    };
    return { store: new CursorStore(options.storage, options.storagePrefix, report), options, report };
}
/** `iterate` for a client whose `subscribe` is given: results as an async iterator. */
export function iterate(subscribe) {
    const pending = [];
    let done = false;
    let failure = null;
    let wake = () => { };
    const stop = subscribe({
        next(value) {
            pending.push(value);
            wake();
        },
        error(error) {
            done = true;
            failure = error;
            wake();
        },
        complete() {
            done = true;
            wake();
        },
    });
    const iterator = (async function* () {
        for (;;) {
            if (!pending.length && !done)
                await new Promise((resolve) => (wake = resolve));
            while (pending.length)
                yield pending.shift();
            if (failure !== null)
                throw failure;
            if (done)
                return;
        }
    })();
    const finish = iterator.return.bind(iterator);
    iterator.return = (value) => {
        stop();
        return finish(value);
    };
    return iterator;
}
/** `resolve`'s answer to an `eventCursor` query, or the error it got. */
export function eventCursorFrom(result) {
    const data = result.data;
    if (typeof data?.eventCursor === 'string')
        return data.eventCursor;
    if (result.errors?.length)
        throw graphqlError(result.errors);
    throw new SwitchboardError('graphql', 'GRAPHQL_ERROR', 'the server answered eventCursor without a cursor');
}
/** Runs the `eventCursor` query through a client's `subscribe`. */
export function queryEventCursor(subscribe) {
    return new Promise((resolve, reject) => {
        let settled = false;
        const settle = (fn) => {
            if (settled)
                return;
            settled = true;
            fn();
        };
        subscribe({ query: EVENT_CURSOR_QUERY }, {
            next: (result) => settle(() => {
                try {
                    resolve(eventCursorFrom(result));
                }
                catch (error) {
                    reject(error);
                }
            }),
            error: (error) => settle(() => reject(toSwitchboardError(error))),
            complete: () => settle(() => reject(new SwitchboardError('closed', 'CONNECTION_CLOSED', 'the eventCursor query ended without an answer'))),
        });
    });
}
