// Cursors: where a subscription (or an entity room) has got to in the server's event log, kept
// in memory and, when the app gives a storage, across a page reload.

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

export const DEFAULT_STORAGE_PREFIX = 'switchboard.cursor:';

/** The `cursor` of a result's root field, if it selected one. */
export function rootCursor(result: unknown): string | undefined {
  if (typeof result !== 'object' || result === null) return undefined;
  const data = (result as { data?: unknown }).data;
  if (typeof data !== 'object' || data === null) return undefined;
  for (const value of Object.values(data)) {
    if (typeof value === 'object' && value !== null) {
      const cursor = (value as { cursor?: unknown }).cursor;
      if (typeof cursor === 'string' && cursor !== '') return cursor;
    }
  }
  return undefined;
}

/**
 * Whether a query declares `$after: String`, the variable the client keeps at the last cursor.
 * A subscription that does not is passed through as it is (it cannot resume).
 */
export function declaresAfter(query: string): boolean {
  const code = query.replace(/"""[\s\S]*?"""|"(?:[^"\\\n]|\\.)*"|#[^\n]*/g, ' ');
  return /\$after\s*:\s*String\b(?!\s*!)/.test(code);
}

/** A stable name for an operation (its text and variables, without `after`), for the storage. */
export function operationKey(query: string, variables: Record<string, unknown> | null | undefined, operationName?: string | null): string {
  const { after: _after, ...rest } = variables ?? {};
  const sorted = Object.keys(rest)
    .sort()
    .map((name) => [name, rest[name]]);
  return JSON.stringify([operationName ?? null, query.replace(/\s+/g, ' ').trim(), sorted]);
}

/** The storage, with every failure reported instead of thrown: a cursor not kept only costs a replay. */
export class CursorStore {
  readonly #storage: CursorStorage | null;
  readonly #prefix: string;
  readonly #report: (error: unknown) => void;

  constructor(storage: CursorStorage | null | undefined, prefix: string | undefined, report: (error: unknown) => void) {
    this.#storage = storage ?? null;
    this.#prefix = prefix ?? DEFAULT_STORAGE_PREFIX;
    this.#report = report;
  }

  get enabled(): boolean {
    return this.#storage !== null;
  }

  async get(key: string): Promise<string | undefined> {
    if (!this.#storage) return undefined;
    try {
      const value = await this.#storage.getItem(this.#prefix + key);
      return typeof value === 'string' && value !== '' ? value : undefined;
    } catch (error) {
      this.#report(error);
      return undefined;
    }
  }

  set(key: string, cursor: string): void {
    this.#run(() => this.#storage?.setItem(this.#prefix + key, cursor));
  }

  remove(key: string): void {
    this.#run(() => this.#storage?.removeItem(this.#prefix + key));
  }

  #run(write: () => void | Promise<void> | undefined): void {
    if (!this.#storage) return;
    try {
      const pending = write();
      if (pending && typeof pending.then === 'function') pending.then(undefined, this.#report);
    } catch (error) {
      this.#report(error);
    }
  }
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
export function backoffDelay(attempt: number, { minDelay = 500, maxDelay = 10_000 }: BackoffOptions = {}): number {
  const ceiling = Math.min(maxDelay, minDelay * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
