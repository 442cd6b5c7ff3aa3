import { ApolloLink } from '@apollo/client';
import { Observable } from 'rxjs';
import type { SubscriptionClient } from './client-types.js';
export type { SubscriptionClient } from './client-types.js';
/**
 * Runs each operation through `client` (a terminating link). Failures reach Apollo as they
 * would through Apollo's GraphQLWsLink: GraphQL errors (a refused subscription) as
 * `CombinedGraphQLErrors`, anything else (a refused token, a closed connection) as the
 * client's SwitchboardError.
 */
export declare class SwitchboardLink extends ApolloLink {
    readonly client: SubscriptionClient;
    constructor(client: SubscriptionClient);
    request(operation: ApolloLink.Operation): Observable<ApolloLink.Result>;
}
/** Subscriptions through `client`, everything else through `other` (an HttpLink, typically). */
export declare function subscriptionsLink(client: SubscriptionClient, other: ApolloLink): ApolloLink;
