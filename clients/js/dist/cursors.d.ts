/**
 * Where cursors are kept across page reloads: the Web Storage interface, so `sessionStorage`
 * works as it is; an async one (React Native's AsyncStorage) works too. Keys start with the
 * client's `storagePrefix`.
 */
export interface CursorStorage {
    getItem(key: string): string | null | undefined | Promise<string | null | undefined>;
    setItem(key: string, value: string): void | Promise<void>;
    removeItem(key: string): void | Promise<void>;
}
export declare const DEFAULT_STORAGE_PREFIX = "switchboard.cursor:";
/** The `cursor` of a result's root field, if it selected one. */
export declare function rootCursor(result: unknown): string | undefined;
/**
 * Whether a query declares `$after: String`, the variable the client keeps at the last cursor.
 * A subscription that does not is passed through as it is (it cannot resume).
 */
export declare function declaresAfter(query: string): boolean;
/** A stable name for an operation (its text and variables, without `after`), for the storage. */
export declare function operationKey(query: string, variables: Record<string, unknown> | null | undefined, operationName?: string | null): string;
/** The storage, with every failure reported instead of thrown: a cursor not kept only costs a replay. */
export declare class CursorStore {
    #private;
    constructor(storage: CursorStorage | null | undefined, prefix: string | undefined, report: (error: unknown) => void);
    get enabled(): boolean;
    get(key: string): Promise<string | undefined>;
    set(key: string, cursor: string): void;
    remove(key: string): void;
}
/** How long to wait before retry number `attempt` (0-based): exponential, capped, with jitter. */
export interface BackoffOptions {
    /** The first wait's ceiling, in ms (default 500). */
    minDelay?: number;
    /** The longest wait, in ms (default 10,000). */
    maxDelay?: number;
}
/**
 * "Equal jitter": half of the exponential ceiling, plus a random part of the other half, so that
 * clients cut off together do not come back together.
 */
export declare function backoffDelay(attempt: number, { minDelay, maxDelay }?: BackoffOptions): number;
export declare function sleep(ms: number): Promise<void>;
