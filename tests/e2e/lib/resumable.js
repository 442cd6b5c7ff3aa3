'use strict';
// The client-side helper that the README's "Resuming after a drop" shows, verbatim: the text
// between the two marker lines must appear in README.md exactly so (test/resume.test.js checks
// it), so that what users copy is what these tests run.

// README begin
/**
 * Wraps a graphql-ws client so that every subscription resumes where it stopped. graphql-ws
 * re-sends the same subscribe payload on each retry: keeping its `after` variable at the cursor
 * of the last event received makes each reconnect a resume. A cursor the server can no longer
 * serve (CURSOR_EXPIRED) is dropped: the subscription starts afresh and `onExpired` refetches.
 */
function resumable(client, { onExpired = () => {} } = {}) {
  return {
    ...client,
    subscribe(request, sink) {
      const payload = { ...request, variables: { ...request.variables } };
      let unsubscribe;
      const resuming = {
        next(result) {
          const cursor = Object.values(result.data ?? {})[0]?.cursor;
          if (cursor) payload.variables.after = cursor;
          sink.next(result);
        },
        error(error) {
          const expired = Array.isArray(error) && error.some((e) => e.extensions?.code === 'CURSOR_EXPIRED');
          if (!expired) return sink.error(error);
          delete payload.variables.after;
          unsubscribe = client.subscribe(payload, resuming);
          onExpired(request);
        },
        complete: () => sink.complete(),
      };
      unsubscribe = client.subscribe(payload, resuming);
      return () => unsubscribe();
    },
  };
}
// README end

module.exports = { resumable };
