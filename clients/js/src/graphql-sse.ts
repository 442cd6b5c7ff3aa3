// `@switchboard/client/graphql-sse`: graphql-sse's `createClient`, resuming (see
// resumable-sse.ts). For networks where WebSockets are not an option.

import { NetworkError, createClient as createGraphqlSseClient } from 'graphql-sse';
import { resumableGraphqlSse } from './resumable-sse.js';
import type { ResumableSseClient, ResumableSseOptions } from './resumable-sse.js';

export type { ResumableSseClient, ResumableSseOptions } from './resumable-sse.js';
export type { ResetEvent } from './operation.js';

export function createClient<SingleConnection extends boolean = false>(
  options: ResumableSseOptions<SingleConnection>,
): ResumableSseClient<SingleConnection> {
  return resumableGraphqlSse(createGraphqlSseClient, options, NetworkError);
}
