import type { Exchange } from '@urql/core';
import type { SubscriptionClient } from './client-types.js';
export type { SubscriptionClient } from './client-types.js';
/**
 * urql's subscriptionExchange, forwarding to `client`. A refused subscription reaches the app as
 * `result.error.graphQLErrors`; anything else (a refused token, a closed connection) as
 * `result.error.networkError`, the client's SwitchboardError.
 */
export declare function switchboardExchange(client: SubscriptionClient, options?: {
    enableAllOperations?: boolean;
}): Exchange;
