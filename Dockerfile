# syntax=docker/dockerfile:1
# The shop-controller image: both binaries on Debian slim with nginx, which the controller
# runs as `nginx -t` before a shop's config goes live. Runs as uid 10001, the chart's
# runAsUser; the chart mounts a writable /tmp and keeps the root file system read-only.
#
#   docker build -t shop-controller:0.1.0 .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The registry, git and target caches survive between builds; the binaries are copied out of
# the target cache in the same step because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin shop-controller --bin shopctl \
    && install -D -m 0755 -t /out target/release/shop-controller target/release/shopctl

FROM debian:bookworm-slim
# nginx-light for `nginx -t` (the controller runs /usr/sbin/nginx), ca-certificates for TLS
# to AWS. No other tools: the image runs one process.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        nginx-light ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 shop-controller \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin shop-controller
COPY --from=build /out/ /usr/local/bin/
USER 10001
# gRPC API; metrics (TODO(#6)) and the ACME HTTP-01 responder (TODO(#5)) once they land.
EXPOSE 50051 9090 8089
ENTRYPOINT ["/usr/local/bin/shop-controller"]
CMD ["serve"]
