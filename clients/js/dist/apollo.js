// `@switchboard/client/apollo`: an Apollo Client 4 link over a resuming client, graphql-ws's or
// graphql-sse's. It imports @apollo/client and rxjs (Apollo Client's own peer dependency), which
// an Apollo app has already.
//
//   const link = subscriptionsLink(createClient({ url, connectionParams }), new HttpLink({ uri }));
//   const client = new ApolloClient({ cache: new InMemoryCache(), link });
import { ApolloLink, CombinedGraphQLErrors } from '@apollo/client';
import { getMainDefinition, print } from '@apollo/client/utilities';
import { Observable } from 'rxjs';
import { SwitchboardError } from './errors.js';
/**
 * Runs each operation through `client` (a terminating link). Failures reach Apollo as they
 * would through Apollo's GraphQLWsLink: GraphQL errors (a refused subscription) as
 * `CombinedGraphQLErrors`, anything else (a refused token, a closed connection) as the
 * client's SwitchboardError.
 */
export class SwitchboardLink extends ApolloLink {
    client;
    constructor(client) {
        super();
        this.client = client;
    }
    request(operation) {
        return new Observable((observer) => {
            const payload = {
                query: print(operation.query),
                variables: operation.variables,
                ...(operation.operationName ? { operationName: operation.operationName } : {}),
                ...(operation.extensions && Object.keys(operation.extensions).length ? { extensions: operation.extensions } : {}),
            };
            const sink = {
                next: (result) => observer.next(result),
                complete: () => observer.complete(),
                error: (error) => {
                    if (SwitchboardError.is(error) && error.kind === 'graphql' && error.errors) {
                        observer.error(new CombinedGraphQLErrors({ errors: error.errors }));
                    }
                    else {
                        observer.error(error);
                    }
                },
            };
            return this.client.subscribe(payload, sink);
        });
    }
}
/** Subscriptions through `client`, everything else through `other` (an HttpLink, typically). */
export function subscriptionsLink(client, other) {
    return ApolloLink.split(({ query }) => {
        const definition = getMainDefinition(query);
        return definition.kind === 'OperationDefinition' && definition.operation === 'subscription';
    }, new SwitchboardLink(client), other);
}
