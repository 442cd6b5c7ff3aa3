// `@switchboard/client/urql`: an urql exchange over a resuming client, graphql-ws's or
// graphql-sse's. It imports @urql/core, which an urql app has already.
//
//   const client = new Client({ url, exchanges: [cacheExchange, fetchExchange, switchboardExchange(ws)] });
import { subscriptionExchange } from '@urql/core';
import { SwitchboardError } from './errors.js';
/**
 * urql's subscriptionExchange, forwarding to `client`. A refused subscription reaches the app as
 * `result.error.graphQLErrors`; anything else (a refused token, a closed connection) as
 * `result.error.networkError`, the client's SwitchboardError.
 */
export function switchboardExchange(client, options = {}) {
    return subscriptionExchange({
        ...options,
        forwardSubscription: (request) => ({
            subscribe: (sink) => ({
                unsubscribe: client.subscribe({ ...request, query: request.query ?? '' }, {
                    next: (result) => sink.next(result),
                    complete: () => sink.complete(),
                    error: (error) => sink.error(SwitchboardError.is(error) && error.kind === 'graphql' && error.errors ? error.errors : error),
                }),
            }),
        }),
    });
}
