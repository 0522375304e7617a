# syntax=docker/dockerfile:1
#
# apm-server in a small image: built in the Rust image, run from Debian
# slim as an unprivileged user, the data directory a volume.
#
#   docker build -t apm-server .
#   docker run -d --name apm -p 7600:7600 -v apm-data:/var/lib/apm \
#       -e APM_SECRET="$(openssl rand -hex 32)" apm-server
#
# The container listens on 0.0.0.0:7600, which the server allows only with
# a secret (token auth): started without APM_SECRET it exits, saying so.
# APM_ALLOW_DEV_MODE=true lifts that for a trusted test network, with TLS.
# Across an untrusted network give it a certificate: mount PEM files and set
# APM_TLS_CERT and APM_TLS_KEY (`docker kill -s HUP apm` reloads them).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit); the
# binary is copied out of the cached target directory, which is not part
# of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p apm-server \
    && install -D target/release/apm-server /out/apm-server

FROM debian:${DEBIAN_RELEASE}-slim
# A fixed uid, so a bind-mounted data directory can be chowned to it.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/apm \
        --shell /usr/sbin/nologin apm \
    && install -d -o apm -g apm -m 0700 /var/lib/apm
COPY --from=build /out/apm-server /usr/local/bin/apm-server
USER apm
ENV APM_LISTEN=0.0.0.0:7600 \
    APM_DATA_DIR=/var/lib/apm
VOLUME ["/var/lib/apm"]
EXPOSE 7600
# SIGTERM is the graceful shutdown: clients get Close(server_shutdown) and
# the store is flushed (give `docker stop` more than --shutdown-timeout-ms).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/apm-server"]
