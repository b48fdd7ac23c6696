# syntax=docker/dockerfile:1
# The tokio-blackbox demo service (examples/demo.rs), for docker-compose.yml.
# Same build as the README's `cargo run --release --example demo`.

FROM rust:1.95-slim-trixie AS build
WORKDIR /src
# .cargo/config.toml carries `--cfg tokio_unstable` (Tokio's task hooks);
# .dockerignore keeps target/ and .git out of the context.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --example demo \
    && cp target/release/examples/demo /usr/local/bin/demo

FROM debian:trixie-slim
COPY --from=build /usr/local/bin/demo /usr/local/bin/demo
# No root needed: the demo serves on loopback inside the container and only
# opens outgoing OTLP connections. Window files (written when no OTLP
# endpoint is set) and dumps go to a writable place.
USER 65532:65532
WORKDIR /tmp
ENV BLACKBOX_DIR=/tmp/blackbox
ENTRYPOINT ["/usr/local/bin/demo"]
CMD ["--duration", "1h"]
