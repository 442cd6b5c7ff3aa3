// The room channel at `/ws`: rooms, presence, typing, and the live updates of orders and products,
// over one WebSocket that comes back by itself.
//
//   const rooms = createRoomsClient({ url: 'wss://example.com/ws', token: () => getToken() });
//   rooms.on('presence', ({ roomId, members }) => render(roomId, members));
//   rooms.on('update', ({ type, payload }) => apply(type, payload));
//   const members = await rooms.join('order:42');
//   input.addEventListener('input', () => rooms.typing('order:42', 'note'));
//
// What it does for the app:
// - connects with a token, and asks for a fresh one (`token()`) before every reconnection;
// - reconnects after any drop with jittered exponential backoff, re-joins every room, and resumes
//   entity rooms (`order:<id>`, `product:<id>`) from the cursor of their last update, so that no
//   update is missed. A room joined for the first time starts from the server's position
//   (`Query.eventCursor` over HTTP), so even a drop before its first update loses nothing;
// - keeps each room's presence: one entry per person (with their tab count), from `room_joined`'s
//   snapshot and the `user_joined_room` / `user_left_room` / `typing_indicator` changes after it;
// - throttles the app's typing indicator (one `isTyping: true` a second at most; the server stops
//   it 3 s after the last one, so the app never has to);
// - sends a `ping` when the socket has been quiet, and reconnects when nothing comes back (the
//   server's own pings are answered by the WebSocket itself);
// - reports every refusal as a SwitchboardError: to the promise of the `join`/`leave` that caused
//   it (marked handled: ignoring it is not an unhandled rejection) and as an `error` event.
//
// Answers are matched to requests by order: the server answers a client's messages in the order
// they were sent (`room_joined`/`room_left`/`pong` or `error`). Typing indicators get no answer
// when accepted, so the client only sends ones the server accepts (a room it is in, a field of at
// most 256 bytes, at most one a second per room).
import { CursorStore, backoffDelay } from './cursors.js';
import { SwitchboardError, handled, toSwitchboardError } from './errors.js';
import { EVENT_CURSOR_QUERY, eventCursorFrom } from './operation.js';
const ROOM_ID = /^[A-Za-z0-9_.:-]{1,128}$/;
const MAX_TYPING_FIELD = 256;
const TYPING_TIMEOUT = 3_000;
export class RoomsClient {
    #options;
    #WebSocket;
    #fetch;
    #graphqlUrl;
    #store;
    #listeners = new Map();
    #rooms = new Map();
    #socket = null;
    #pending = [];
    #state = 'connecting';
    #attempt = 0;
    #refusals = 0;
    #timer;
    #heartbeat;
    #lastMessageAt = 0;
    #pingSentAt = 0;
    #userId = null;
    #clientId = null;
    constructor(options) {
        this.#options = options;
        const WebSocketImpl = options.webSocketImpl ?? globalThis.WebSocket;
        if (!WebSocketImpl) {
            throw new SwitchboardError('client', 'NO_WEBSOCKET', 'no WebSocket here: pass webSocketImpl (in Node 20, the `ws` package)');
        }
        this.#WebSocket = WebSocketImpl;
        const globalFetch = globalThis.fetch;
        this.#fetch = options.fetch ?? (globalFetch ? (input, init) => globalFetch(input, init) : undefined);
        this.#graphqlUrl = options.graphqlUrl === undefined ? graphqlUrlFor(options.url) : options.graphqlUrl;
        this.#store = new CursorStore(options.storage, options.storagePrefix, (error) => this.#emit('error', toSwitchboardError(error)));
        this.#connect();
    }
    /** `connecting`, `open`, `reconnecting` or `closed` (by `close()`, or given up). */
    get state() {
        return this.#state;
    }
    /** The signed-in user (from `connection_established`), once connected. */
    get userId() {
        return this.#userId;
    }
    /** This connection's id, as the server knows it. */
    get clientId() {
        return this.#clientId;
    }
    /** Listens to an event; returns what stops listening. */
    on(event, listener) {
        let set = this.#listeners.get(event);
        if (!set)
            this.#listeners.set(event, (set = new Set()));
        set.add(listener);
        return () => set.delete(listener);
    }
    /** The rooms the app is in (joined, or being joined). */
    get rooms() {
        return [...this.#rooms.keys()];
    }
    /** A room's members, one per person, in arrival order (empty until joined). */
    members(roomId) {
        return [...(this.#rooms.get(roomId)?.members.values() ?? [])].map((m) => ({ ...m }));
    }
    /**
     * Joins a room (and re-joins it after every reconnection until `leave`); resolves with its
     * members. Refused (`FORBIDDEN`, `NOT_FOUND`, ...): rejects with a `room` SwitchboardError.
     */
    join(roomId) {
        return handled(new Promise((resolve, reject) => {
            if (this.#state === 'closed')
                return reject(closedError());
            if (!ROOM_ID.test(roomId)) {
                return reject(new SwitchboardError('room', 'BAD_REQUEST', `not a room id: ${JSON.stringify(roomId)}`, { roomId }));
            }
            let room = this.#rooms.get(roomId);
            if (room?.joined)
                return resolve(this.members(roomId));
            const waiter = { resolve, reject };
            if (room) {
                room.waiters.push(waiter);
                return;
            }
            room = {
                id: roomId,
                entity: /^(order|product):/.test(roomId),
                cursor: undefined,
                joined: false,
                everJoined: false,
                members: new Map(),
                waiters: [waiter],
                typingSentAt: 0,
                typingField: null,
            };
            this.#rooms.set(roomId, room);
            if (this.#state === 'open')
                this.#joinLater(room);
        }));
    }
    /** Leaves a room: it is not re-joined any more, and its kept cursor is forgotten. */
    leave(roomId) {
        return handled(new Promise((resolve, reject) => {
            const room = this.#rooms.get(roomId);
            if (!room)
                return resolve();
            this.#rooms.delete(roomId);
            if (room.entity)
                this.#store.remove(roomKey(roomId));
            const refusal = new SwitchboardError('room', 'LEFT', `left ${roomId} before it was joined`, { roomId });
            for (const waiter of room.waiters.splice(0))
                waiter.reject(refusal);
            if (this.#state !== 'open' || !room.joined)
                return resolve();
            this.#send({ type: 'leave_room', payload: { roomId } }, { kind: 'leave', roomId, done: resolve, fail: reject });
        }));
    }
    /**
     * Says the user is typing in a joined room (call it on every keystroke): sends `isTyping: true`
     * at most once per `typingThrottle` ms, or at once when the field changes. The server stops the
     * indicator 3 s after the last one. Returns whether the room is joined.
     */
    typing(roomId, field) {
        const room = this.#rooms.get(roomId);
        if (!room?.joined || this.#state !== 'open')
            return false;
        const name = field ?? null;
        if (name !== null && new TextEncoder().encode(name).length > MAX_TYPING_FIELD) {
            this.#emit('error', new SwitchboardError('room', 'BAD_REQUEST', `a typing field is at most ${MAX_TYPING_FIELD} bytes`, { roomId }));
            return true;
        }
        const now = Date.now();
        if (now - room.typingSentAt < (this.#options.typingThrottle ?? 1_000) && name === room.typingField)
            return true;
        room.typingSentAt = now;
        room.typingField = name;
        this.#send({ type: 'typing_indicator', payload: { roomId, isTyping: true, ...(name === null ? {} : { field: name }) } });
        return true;
    }
    /** Stops the user's typing indicator now, rather than 3 s after the last keystroke. */
    stopTyping(roomId) {
        const room = this.#rooms.get(roomId);
        if (!room?.joined || this.#state !== 'open' || Date.now() - room.typingSentAt > TYPING_TIMEOUT)
            return;
        room.typingSentAt = 0;
        const field = room.typingField;
        this.#send({ type: 'typing_indicator', payload: { roomId, isTyping: false, ...(field === null ? {} : { field }) } });
    }
    /** Closes the connection for good (code 1000); pending joins reject. */
    close() {
        if (this.#state === 'closed')
            return;
        this.#giveUp(null);
        const socket = this.#socket;
        this.#socket = null;
        if (socket) {
            detach(socket);
            socket.close(1000, 'closed by the client');
        }
    }
    // --- the connection ---------------------------------------------------------------------
    #connect() {
        void this.#open().catch((error) => this.#dropped(toSwitchboardError(error), false));
    }
    async #open() {
        const token = typeof this.#options.token === 'function' ? await this.#options.token() : this.#options.token;
        if (this.#state === 'closed')
            return;
        const url = withToken(this.#options.url, token);
        const socket = new this.#WebSocket(url);
        this.#socket = socket;
        let opened = false;
        socket.onopen = () => {
            opened = true;
        };
        socket.onmessage = (event) => {
            if (this.#socket !== socket)
                return;
            this.#lastMessageAt = Date.now();
            let message;
            try {
                message = JSON.parse(String(event.data));
            }
            catch {
                return; // not ours to judge: the server only sends JSON
            }
            this.#receive(message);
        };
        socket.onerror = () => { };
        socket.onclose = (event) => {
            if (this.#socket !== socket)
                return;
            this.#socket = null;
            detach(socket);
            if (opened) {
                this.#dropped(new SwitchboardError('closed', 'CONNECTION_CLOSED', `the room channel closed (${event.code}${event.reason ? ` ${event.reason}` : ''})`, { closeCode: event.code }), true);
            }
            else {
                // Refused before the upgrade (a WebSocket cannot tell why): ask the same URL over HTTP.
                void this.#diagnose(url).then((error) => this.#dropped(error, false));
            }
        };
    }
    /** Why the upgrade failed: the server's status for the same request, or a network error. */
    async #diagnose(url) {
        const network = new SwitchboardError('network', 'NETWORK_ERROR', 'the room channel could not connect');
        if (!this.#fetch)
            return network;
        try {
            const response = await this.#fetch(url.replace(/^ws/, 'http'));
            const status = response.status;
            if (status === 401)
                return new SwitchboardError('auth', 'UNAUTHENTICATED', 'the server refused the token (401)', { status });
            if (status === 403)
                return new SwitchboardError('auth', 'FORBIDDEN', 'the server refused this origin (403)', { status });
            if (status === 429)
                return new SwitchboardError('network', 'TOO_MANY_CONNECTIONS', 'this user has too many connections (429)', { status });
            if (status === 503)
                return new SwitchboardError('network', 'UNAVAILABLE', 'the server is full or unavailable (503)', { status });
            return network;
        }
        catch {
            return network;
        }
    }
    /** The socket is gone (or never came): report, then reconnect unless it is time to give up. */
    #dropped(error, wasOpen) {
        if (this.#state === 'closed')
            return;
        this.#stopHeartbeat();
        for (const pending of this.#pending.splice(0)) {
            // A leave whose connection is gone is done: the server forgets the connection's rooms.
            if (pending.kind === 'leave')
                pending.done();
        }
        for (const room of this.#rooms.values())
            room.joined = false;
        if (error.kind === 'auth') {
            this.#refusals += 1;
            const retries = typeof this.#options.token === 'function' ? (this.#options.authRetries ?? 2) : 0;
            if (this.#refusals > retries)
                return this.#giveUp(error);
        }
        else if (wasOpen) {
            this.#refusals = 0;
        }
        if (this.#attempt >= (this.#options.maxAttempts ?? Infinity))
            return this.#giveUp(error);
        this.#emit('error', error);
        const delay = backoffDelay(this.#attempt, this.#options.backoff);
        this.#attempt += 1;
        this.#setState('reconnecting', { delay, error });
        this.#timer = setTimeout(() => this.#connect(), delay);
    }
    #giveUp(error) {
        clearTimeout(this.#timer);
        this.#stopHeartbeat();
        const reason = error ?? closedError();
        for (const room of this.#rooms.values())
            for (const waiter of room.waiters.splice(0))
                waiter.reject(reason);
        for (const pending of this.#pending.splice(0))
            if (pending.kind === 'leave')
                pending.done();
        if (error)
            this.#emit('error', error);
        this.#setState('closed', error ? { error } : {});
    }
    #setState(state, extra = {}) {
        this.#state = state;
        this.#emit('status', { state, attempt: this.#attempt, ...extra });
    }
    #send(message, pending) {
        const socket = this.#socket;
        if (!socket || socket.readyState !== 1)
            return;
        socket.send(JSON.stringify(message));
        if (pending)
            this.#pending.push(pending);
    }
    // --- joining ----------------------------------------------------------------------------
    /** {@link RoomsClient.#sendJoin}, whose failures become `error` events. */
    #joinLater(room) {
        this.#sendJoin(room).catch((error) => this.#emit('error', toSwitchboardError(error)));
    }
    /** Sends `join_room`: an entity room with its cursor (a kept one, or the server's position now). */
    async #sendJoin(room) {
        const socket = this.#socket;
        if (room.entity && !room.cursor) {
            const kept = await this.#store.get(roomKey(room.id));
            if (kept && !room.cursor)
                room.cursor = kept;
        }
        if (room.entity && !room.cursor) {
            const cursor = await this.#eventCursor();
            if (cursor && !room.cursor)
                room.cursor = cursor;
        }
        // The connection, or the app's mind, may have changed meanwhile.
        if (this.#socket !== socket || this.#rooms.get(room.id) !== room || this.#state !== 'open')
            return;
        const payload = { roomId: room.id };
        if (room.cursor)
            payload['after'] = room.cursor;
        this.#send({ type: 'join_room', payload }, { kind: 'join', roomId: room.id });
    }
    /** `Query.eventCursor` over HTTP (anyone may ask); `undefined` when it cannot be had. */
    async #eventCursor() {
        if (!this.#graphqlUrl || !this.#fetch)
            return undefined;
        try {
            const response = await this.#fetch(this.#graphqlUrl, {
                method: 'POST',
                headers: { 'content-type': 'application/json', accept: 'application/json' },
                body: JSON.stringify({ query: EVENT_CURSOR_QUERY }),
            });
            return eventCursorFrom((await response.json()));
        }
        catch (error) {
            this.#emit('error', toSwitchboardError(error));
            return undefined;
        }
    }
    // --- what the server says -----------------------------------------------------------------
    #receive(message) {
        const payload = (typeof message.payload === 'object' && message.payload !== null ? message.payload : {});
        const at = typeof message.timestamp === 'string' ? message.timestamp : new Date().toISOString();
        switch (message.type) {
            case 'connection_established':
                return this.#established(payload);
            case 'room_joined':
                return this.#roomJoined(payload);
            case 'room_left':
                this.#answered('leave', String(payload['roomId']));
                return;
            case 'pong':
                this.#answered('ping');
                return;
            case 'error':
                return this.#refused(payload);
            case 'user_joined_room': {
                const room = this.#joinedRoom(payload['roomId']);
                const userId = String(payload['userId']);
                if (!room || room.members.has(userId))
                    return;
                const name = typeof payload['name'] === 'string' ? payload['name'] : null;
                room.members.set(userId, { userId, name, connections: 1, joinedAt: at, isTyping: false, typingField: null });
                return this.#presence(room);
            }
            case 'user_left_room': {
                const room = this.#joinedRoom(payload['roomId']);
                if (room?.members.delete(String(payload['userId'])))
                    this.#presence(room);
                return;
            }
            case 'typing_indicator': {
                const room = this.#joinedRoom(payload['roomId']);
                if (!room)
                    return;
                const userId = String(payload['userId']);
                const isTyping = payload['isTyping'] === true;
                const field = typeof payload['field'] === 'string' ? payload['field'] : null;
                const member = room.members.get(userId);
                if (member) {
                    member.isTyping = isTyping;
                    member.typingField = isTyping ? field : null;
                }
                this.#emit('typing', { roomId: room.id, userId, isTyping, field });
                if (member)
                    this.#presence(room);
                return;
            }
            case 'order_update':
                return this.#update('order_update', `order:${String(payload['orderId'])}`, payload);
            case 'inventory_update':
                return this.#update('inventory_update', `product:${String(payload['productId'])}`, payload);
            case 'notification':
                return this.#emit('notification', { payload });
            default:
                return; // newer messages: not known here
        }
    }
    #established(payload) {
        this.#userId = typeof payload['userId'] === 'string' ? payload['userId'] : null;
        this.#clientId = typeof payload['clientId'] === 'string' ? payload['clientId'] : null;
        this.#attempt = 0;
        this.#pending = [];
        this.#setState('open');
        this.#startHeartbeat();
        for (const room of this.#rooms.values()) {
            if (room.entity && room.everJoined && !room.cursor) {
                // It ran live without a position (none could be had) and the connection dropped.
                this.#emit('reset', { roomId: room.id, reason: 'NO_CURSOR' });
            }
            this.#joinLater(room);
        }
    }
    #roomJoined(payload) {
        const roomId = String(payload['roomId']);
        this.#answered('join', roomId);
        const room = this.#rooms.get(roomId);
        if (!room) {
            // The app left while the join was on its way: leave on the server too.
            this.#send({ type: 'leave_room', payload: { roomId } }, { kind: 'leave', roomId, done: () => { }, fail: () => { } });
            return;
        }
        const members = Array.isArray(payload['members']) ? payload['members'] : [];
        room.members = new Map(members.map((m) => [String(m['userId']), member(m)]));
        const rejoined = room.everJoined;
        room.joined = true;
        room.everJoined = true;
        const list = this.members(roomId);
        for (const waiter of room.waiters.splice(0))
            waiter.resolve(list);
        this.#emit('joined', { roomId, members: list, rejoined });
        this.#presence(room);
    }
    /** Takes the oldest pending request off; it should be of `kind` (for `roomId`). */
    #answered(kind, roomId) {
        const at = this.#pending.findIndex((p) => p.kind === kind && (roomId === undefined || !('roomId' in p) || p.roomId === roomId));
        if (at < 0)
            return undefined;
        const [pending] = this.#pending.splice(at, 1);
        if (pending?.kind === 'leave') {
            pending.done();
            this.#emit('left', { roomId: pending.roomId });
        }
        return pending;
    }
    /** An `error`: the answer to the oldest request still waiting. */
    #refused(payload) {
        const code = typeof payload['code'] === 'string' ? payload['code'] : 'ERROR';
        const text = typeof payload['message'] === 'string' ? payload['message'] : code;
        const pending = this.#pending.shift();
        const roomId = pending && 'roomId' in pending ? pending.roomId : undefined;
        const error = new SwitchboardError('room', code, text, roomId === undefined ? {} : { roomId });
        if (pending?.kind === 'leave')
            pending.fail(error);
        if (pending?.kind === 'join') {
            const room = this.#rooms.get(pending.roomId);
            if (room && code === 'CURSOR_EXPIRED') {
                // Too far behind to replay: join from the server's position now, and let the app refetch.
                room.cursor = undefined;
                room.everJoined = false;
                this.#store.remove(roomKey(room.id));
                this.#emit('reset', { roomId: room.id, reason: 'CURSOR_EXPIRED' });
                this.#joinLater(room);
                return;
            }
            if (room && !room.joined) {
                this.#rooms.delete(room.id);
                this.#store.remove(roomKey(room.id));
                for (const waiter of room.waiters.splice(0))
                    waiter.reject(error);
            }
        }
        this.#emit('error', error);
    }
    #update(type, roomId, payload) {
        const room = this.#rooms.get(roomId);
        const cursor = payload['cursor'];
        if (room && typeof cursor === 'string') {
            room.cursor = cursor;
            this.#store.set(roomKey(roomId), cursor);
        }
        this.#emit('update', { roomId, type, payload: payload });
    }
    #joinedRoom(roomId) {
        const room = this.#rooms.get(String(roomId));
        return room?.joined ? room : undefined;
    }
    #presence(room) {
        this.#emit('presence', { roomId: room.id, members: this.members(room.id) });
    }
    // --- liveness -----------------------------------------------------------------------------
    #startHeartbeat() {
        this.#stopHeartbeat();
        const every = this.#options.pingInterval ?? 25_000;
        if (!every)
            return;
        const patience = this.#options.pongTimeout ?? 10_000;
        this.#lastMessageAt = Date.now();
        this.#pingSentAt = 0;
        this.#heartbeat = setInterval(() => {
            const now = Date.now();
            if (this.#pingSentAt && this.#lastMessageAt < this.#pingSentAt && now - this.#pingSentAt >= patience) {
                // Nothing since our ping: the connection is dead without knowing it. Start again.
                const socket = this.#socket;
                this.#socket = null;
                if (socket) {
                    detach(socket);
                    socket.close(4000, 'no answer to ping');
                }
                this.#dropped(new SwitchboardError('network', 'TIMEOUT', `no answer to a ping within ${patience} ms`), true);
                return;
            }
            if (now - this.#lastMessageAt >= every && (!this.#pingSentAt || this.#lastMessageAt >= this.#pingSentAt)) {
                this.#pingSentAt = now;
                this.#send({ type: 'ping' }, { kind: 'ping' });
            }
        }, Math.min(every, patience, 1_000));
    }
    #stopHeartbeat() {
        clearInterval(this.#heartbeat);
        this.#heartbeat = undefined;
    }
    #emit(event, value) {
        for (const listener of [...(this.#listeners.get(event) ?? [])]) {
            try {
                listener(value);
            }
            catch (error) {
                // An app's listener that throws must not break the connection; say so once, on the console.
                if (event !== 'error')
                    this.#emit('error', toSwitchboardError(error));
            }
        }
    }
}
/** Connects to the room channel (see {@link RoomsClient}). */
export function createRoomsClient(options) {
    return new RoomsClient(options);
}
function member(m) {
    return {
        userId: String(m['userId']),
        name: typeof m['name'] === 'string' ? m['name'] : null,
        connections: typeof m['connections'] === 'number' ? m['connections'] : 1,
        joinedAt: typeof m['joinedAt'] === 'string' ? m['joinedAt'] : '',
        isTyping: m['isTyping'] === true,
        typingField: typeof m['typingField'] === 'string' ? m['typingField'] : null,
    };
}
function detach(socket) {
    socket.onopen = null;
    socket.onmessage = null;
    socket.onclose = null;
    socket.onerror = () => { };
}
function closedError() {
    return new SwitchboardError('client', 'CLIENT_CLOSED', 'the rooms client is closed');
}
function roomKey(roomId) {
    return `room:${roomId}`;
}
/** `url` with `?token=`. */
function withToken(url, token) {
    const parsed = new URL(url);
    parsed.searchParams.set('token', token.replace(/^Bearer\s+/i, ''));
    return parsed.toString();
}
/** `ws(s)://host/ws` → `http(s)://host/graphql`. */
function graphqlUrlFor(url) {
    try {
        const parsed = new URL(url);
        parsed.protocol = parsed.protocol === 'wss:' ? 'https:' : 'http:';
        parsed.pathname = parsed.pathname.replace(/\/ws\/?$/, '/graphql');
        parsed.search = '';
        return parsed.toString();
    }
    catch {
        return null;
    }
}
