# syntax=docker/dockerfile:1
# The keyward binary (controller, verifier, crd) in a minimal non-root image:
#   docker build -t ghcr.io/keyward/keyward:0.1.0 .

# Build on the Debian release the runtime image is made from (bookworm = Debian 12), so the
# binary links against the same glibc.
FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares the benches: every target it names is present.
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin keyward \
    && cp target/release/keyward /keyward

# glibc and libgcc, CA certificates, no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /keyward /keyward
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/keyward"]
