# The switchboard server in a small Debian image, built from the repository root:
#   docker build -t switchboard .
# deploy/compose.yaml builds it for its three nodes. Written without Docker at hand: untested.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The registry and the target directory are cache mounts: a rebuild after a code change
# recompiles Switchboard, not its dependencies.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin switchboard \
    && cp target/release/switchboard /usr/local/bin/switchboard

FROM debian:bookworm-slim
# No TLS library is needed: the binary links none (PostgreSQL and Redis are spoken in plain TCP on
# the private network of the deployment).
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/switchboard switchboard
COPY --from=build /usr/local/bin/switchboard /usr/local/bin/switchboard
USER switchboard
WORKDIR /var/lib/switchboard
ENV BIND_ADDR=0.0.0.0:4000
EXPOSE 4000
# /ready answers 200 once the store can commit a write (bash's /dev/tcp: no curl in the image).
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/4000 && printf 'GET /ready HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# SIGTERM: the server closes every socket with 1001, says goodbye to the cluster and exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchboard"]
