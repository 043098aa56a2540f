# Multi-stage build: compile with the Rust toolchain, run on a minimal distroless image.
#   docker build -t portcullis .
#   docker run --read-only --cap-drop ALL --security-opt no-new-privileges -p 8443:8443 \
#     -v /srv/portcullis:/etc/portcullis:ro portcullis
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The allocator's build settings (jemalloc returns freed memory after about a second).
COPY .cargo ./.cargo
# Cargo.toml declares the [[bench]] targets, and cargo refuses to load a manifest whose declared
# targets are missing, even for `--bin`: the bench sources come along but are not compiled.
# Tests are discovered, not declared, so they stay out of the build.
COPY benches/*.rs ./benches/
COPY src ./src
RUN cargo build --release --locked --bin portcullis

# distroless/cc: glibc and CA certificates, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
# Numeric, so Kubernetes' runAsNonRoot can verify it: 65532 is distroless's "nonroot".
USER 65532:65532
# Client listener (TLS) and admin listener (/healthz, /readyz, /metrics; loopback by default).
EXPOSE 8443 9901
# The health check runs inside the container, so the admin port can stay on loopback.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/portcullis", "healthcheck", "--config", "/etc/portcullis/portcullis.toml"]
# SIGTERM stops accepting and drains in-flight requests within shutdown_grace.
STOPSIGNAL SIGTERM
# Nothing is written to the image's filesystem: run it with --read-only (readOnlyRootFilesystem
# in Kubernetes). The audit log goes to stdout or to a file on a mounted volume.
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["run", "--config", "/etc/portcullis/portcullis.toml"]
