// `@switchboard/client`: everything that needs no other package at run time, so that a browser
// page can load it as it is (the console and the rooms demo do).
//
// - resumableGraphqlWs / resumableGraphqlSse: a graphql-ws or graphql-sse client, made with the
//   `createClient` you hand it, whose subscriptions resume by cursor. In Node or with a bundler,
//   `@switchboard/client/graphql-ws` and `@switchboard/client/graphql-sse` hand it for you.
// - createRoomsClient: the `/ws` room channel (rooms, presence, typing, entity updates).
// - SwitchboardError: what every failure is.
// - `@switchboard/client/apollo` (an Apollo Client link) and `@switchboard/client/urql` (an urql
//   exchange) build on either client.

export { SwitchboardError, toSwitchboardError } from './errors.js';
export type { ErrorDetails, ErrorKind, GraphQLErrorLike } from './errors.js';
export { backoffDelay } from './cursors.js';
export type { BackoffOptions, CursorStorage } from './cursors.js';
export { EVENT_CURSOR_QUERY } from './operation.js';
export type { ExecutionResultLike, ResetEvent, ResumeOptions, Sink, SubscribePayload } from './operation.js';
export { resumableGraphqlWs } from './resumable-ws.js';
export type { ResumableClient, ResumableWsOptions } from './resumable-ws.js';
export { resumableGraphqlSse } from './resumable-sse.js';
export type { NetworkErrorClass, ResumableSseClient, ResumableSseOptions } from './resumable-sse.js';
export { RoomsClient, createRoomsClient } from './rooms.js';
export type { EntityUpdate, Member, RoomsClientOptions, RoomsEvents, RoomsState, WebSocketConstructorLike, WebSocketLike } from './rooms.js';
