// `@switchboard/client/graphql-ws`: graphql-ws's `createClient`, resuming. Change this one import
// (`from 'graphql-ws'`) and every subscription that declares `$after: String` and selects
// `cursor` resumes across reconnects, from its very first moment (see resumable-ws.ts).
import { createClient as createGraphqlWsClient } from 'graphql-ws';
import { resumableGraphqlWs } from './resumable-ws.js';
export function createClient(options) {
    return resumableGraphqlWs(createGraphqlWsClient, options);
}
