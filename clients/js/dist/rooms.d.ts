import type { BackoffOptions, CursorStorage } from './cursors.js';
import { SwitchboardError } from './errors.js';
/** One person in a room. */
export interface Member {
    userId: string;
    name: string | null;
    /** Their connections (tabs) in the room, on every node, as of the last `room_joined`. */
    connections: number;
    joinedAt: string;
    isTyping: boolean;
    typingField: string | null;
}
/** The WebSocket the client needs: the browser's, or the `ws` package's in Node. */
export interface WebSocketLike {
    readonly readyState: number;
    send(data: string): void;
    close(code?: number, reason?: string): void;
    onopen: ((event: unknown) => void) | null;
    onmessage: ((event: {
        data: unknown;
    }) => void) | null;
    onclose: ((event: {
        code: number;
        reason: string;
    }) => void) | null;
    onerror: ((event: unknown) => void) | null;
}
export type WebSocketConstructorLike = new (url: string) => WebSocketLike;
type FetchLike = (input: string, init?: {
    method?: string;
    headers?: Record<string, string>;
    body?: string;
}) => Promise<{
    ok: boolean;
    status: number;
    json(): Promise<unknown>;
}>;
export interface RoomsClientOptions {
    /** The channel, e.g. `wss://example.com/ws`. */
    url: string;
    /** The user's JWT, or a function called before every connection for a fresh one. */
    token: string | (() => string | Promise<string>);
    /** The WebSocket class; the global one by default (pass the `ws` package's in Node 20). */
    webSocketImpl?: WebSocketConstructorLike;
    /** For `eventCursor` and for telling a refused token from a network failure; the global `fetch` by default. */
    fetch?: FetchLike;
    /**
     * Where `Query.eventCursor` is asked (the position an entity room starts from); by default the
     * same server's `/graphql`. `null`: entity rooms joined for the first time start live.
     */
    graphqlUrl?: string | null;
    /** Keeps entity rooms' cursors across a page reload (e.g. `sessionStorage`); off by default. */
    storage?: CursorStorage | null;
    storagePrefix?: string;
    /** Waits between reconnection attempts (default 0.5 s to 10 s, jittered). */
    backoff?: BackoffOptions;
    /** Attempts in a row before giving up and closing (default: no limit). */
    maxAttempts?: number;
    /** How many refusals of the token in a row are retried with a fresh `token()` (default 2; none for a fixed token). */
    authRetries?: number;
    /** A `ping` after this many ms without a message (default 25,000; 0: never). */
    pingInterval?: number;
    /** Reconnect when nothing arrives this many ms after a `ping` (default 10,000). */
    pongTimeout?: number;
    /** The shortest time between two `isTyping: true` for one room, in ms (default 1,000). */
    typingThrottle?: number;
}
export type RoomsState = 'connecting' | 'open' | 'reconnecting' | 'closed';
export interface RoomsEvents {
    /** The connection's state changed; `delay` is the wait before the next attempt. */
    status: {
        state: RoomsState;
        attempt: number;
        delay?: number;
        error?: SwitchboardError;
    };
    /** A room was joined, or joined again after a reconnection (`rejoined`), with its members. */
    joined: {
        roomId: string;
        members: Member[];
        rejoined: boolean;
    };
    /** The app left a room. */
    left: {
        roomId: string;
    };
    /** A room's members changed (whole list, in arrival order). */
    presence: {
        roomId: string;
        members: Member[];
    };
    /** Someone else's typing indicator started or stopped. */
    typing: {
        roomId: string;
        userId: string;
        isTyping: boolean;
        field: string | null;
    };
    /** An entity room's update: an order's (`order_update`) or a product's stock (`inventory_update`). */
    update: {
        roomId: string;
        type: 'order_update' | 'inventory_update';
        payload: EntityUpdate;
    };
    /** A notification for the signed-in user (every connection of theirs gets it; not resumed). */
    notification: {
        payload: Record<string, unknown>;
    };
    /**
     * An entity room could not be resumed (its cursor was too old: `CURSOR_EXPIRED`), or it had no
     * position when its connection dropped (`NO_CURSOR`): it was joined afresh; refetch it.
     */
    reset: {
        roomId: string;
        reason: 'CURSOR_EXPIRED' | 'NO_CURSOR';
    };
    /** Something was refused or failed; the client carries on unless `status` says `closed`. */
    error: SwitchboardError;
}
export interface EntityUpdate {
    cursor: string;
    sequence: number;
    [field: string]: unknown;
}
type Listener<E extends keyof RoomsEvents> = (event: RoomsEvents[E]) => void;
export declare class RoomsClient {
    #private;
    constructor(options: RoomsClientOptions);
    /** `connecting`, `open`, `reconnecting` or `closed` (by `close()`, or given up). */
    get state(): RoomsState;
    /** The signed-in user (from `connection_established`), once connected. */
    get userId(): string | null;
    /** This connection's id, as the server knows it. */
    get clientId(): string | null;
    /** Listens to an event; returns what stops listening. */
    on<E extends keyof RoomsEvents>(event: E, listener: Listener<E>): () => void;
    /** The rooms the app is in (joined, or being joined). */
    get rooms(): string[];
    /** A room's members, one per person, in arrival order (empty until joined). */
    members(roomId: string): Member[];
    /**
     * Joins a room (and re-joins it after every reconnection until `leave`); resolves with its
     * members. Refused (`FORBIDDEN`, `NOT_FOUND`, ...): rejects with a `room` SwitchboardError.
     */
    join(roomId: string): Promise<Member[]>;
    /** Leaves a room: it is not re-joined any more, and its kept cursor is forgotten. */
    leave(roomId: string): Promise<void>;
    /**
     * Says the user is typing in a joined room (call it on every keystroke): sends `isTyping: true`
     * at most once per `typingThrottle` ms, or at once when the field changes. The server stops the
     * indicator 3 s after the last one. Returns whether the room is joined.
     */
    typing(roomId: string, field?: string | null): boolean;
    /** Stops the user's typing indicator now, rather than 3 s after the last keystroke. */
    stopTyping(roomId: string): void;
    /** Closes the connection for good (code 1000); pending joins reject. */
    close(): void;
}
/** Connects to the room channel (see {@link RoomsClient}). */
export declare function createRoomsClient(options: RoomsClientOptions): RoomsClient;
export {};
