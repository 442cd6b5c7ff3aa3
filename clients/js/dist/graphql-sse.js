// `@switchboard/client/graphql-sse`: graphql-sse's `createClient`, resuming (see
// resumable-sse.ts). For networks where WebSockets are not an option.
import { NetworkError, createClient as createGraphqlSseClient } from 'graphql-sse';
import { resumableGraphqlSse } from './resumable-sse.js';
export function createClient(options) {
    return resumableGraphqlSse(createGraphqlSseClient, options, NetworkError);
}
