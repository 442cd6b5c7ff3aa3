import type { ResumableClient, ResumableWsOptions } from './resumable-ws.js';
export type { ResumableClient, ResumableWsOptions } from './resumable-ws.js';
export type { ResetEvent } from './operation.js';
export declare function createClient(options: ResumableWsOptions): ResumableClient;
