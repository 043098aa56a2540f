# Multi-stage build: compile with the Rust toolchain, run on a minimal distroless image.
#   docker build -t portcullis .
#   docker run --read-only -p 8443:8443 \
#     -v "$PWD/config:/etc/portcullis:ro" portcullis
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin portcullis

# distroless/cc: glibc and CA certificates, no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
USER nonroot:nonroot
# Client listener (TLS) and admin listener (/healthz, /readyz, /metrics; loopback by default).
EXPOSE 8443 9901
# The health check runs inside the container, so the admin port can stay on loopback.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/portcullis", "healthcheck", "--config", "/etc/portcullis/portcullis.toml"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["run", "--config", "/etc/portcullis/portcullis.toml"]
