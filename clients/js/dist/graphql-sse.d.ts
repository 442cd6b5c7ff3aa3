import type { ResumableSseClient, ResumableSseOptions } from './resumable-sse.js';
export type { ResumableSseClient, ResumableSseOptions } from './resumable-sse.js';
export type { ResetEvent } from './operation.js';
export declare function createClient<SingleConnection extends boolean = false>(options: ResumableSseOptions<SingleConnection>): ResumableSseClient<SingleConnection>;
