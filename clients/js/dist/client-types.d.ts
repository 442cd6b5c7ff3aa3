import type { Sink, SubscribePayload } from './operation.js';
/** `subscribe`, as graphql-ws's and graphql-sse's clients (and this package's) have it. */
export interface SubscriptionClient {
    subscribe(payload: SubscribePayload, sink: Sink<never>): () => void;
}
