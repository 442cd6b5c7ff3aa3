// `@switchboard/client/graphql-ws`: graphql-ws's `createClient`, resuming. Change this one import
// (`from 'graphql-ws'`) and every subscription that declares `$after: String` and selects
// `cursor` resumes across reconnects, from its very first moment (see resumable-ws.ts).

import { createClient as createGraphqlWsClient } from 'graphql-ws';
import { resumableGraphqlWs } from './resumable-ws.js';
import type { ResumableClient, ResumableWsOptions } from './resumable-ws.js';

export type { ResumableClient, ResumableWsOptions } from './resumable-ws.js';
export type { ResetEvent } from './operation.js';

export function createClient(options: ResumableWsOptions): ResumableClient {
  return resumableGraphqlWs(createGraphqlWsClient, options);
}
