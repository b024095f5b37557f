# syntax=docker/dockerfile:1
# ipfs-image-operator: the IpfsImage controller (`run`), also `convert` and `crd`.
# Build from the repository root (see docker/README.md):
#   docker build -f docker/operator.Dockerfile -t ghcr.io/ipfs-image-operator/ipfs-image-operator:0.1.0 .

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace: cargo needs every member's manifest (docker/operator.Dockerfile.dockerignore
# keeps target/, e2e/.deps/ and node_modules/ out of the context).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p ipfs-image-operator \
 && install -D -m 0755 target/release/ipfs-image-operator /out/ipfs-image-operator

# glibc + libgcc + CA certificates, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ipfs-image-operator /usr/local/bin/ipfs-image-operator
# distroless "nonroot"; the chart also sets runAsNonRoot and a read-only root filesystem.
USER 65532:65532
LABEL org.opencontainers.image.title="ipfs-image-operator" \
      org.opencontainers.image.description="Imports container images into IPFS and keeps them pinned" \
      org.opencontainers.image.source="https://github.com/ipfs-image-operator/ipfs-image-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/local/bin/ipfs-image-operator"]
CMD ["run"]
