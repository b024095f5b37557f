# syntax=docker/dockerfile:1
# ipfs-image-agent: the node agent (`serve`, `configure-containerd`, `cleanup`).
# Build from the repository root (see docker/README.md):
#   docker build -f docker/agent.Dockerfile -t ghcr.io/ipfs-image-operator/ipfs-image-agent:0.1.0 .

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace: cargo needs every member's manifest (docker/agent.Dockerfile.dockerignore
# keeps target/, e2e/.deps/ and node_modules/ out of the context).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p ipfs-image-agent \
 && install -D -m 0755 target/release/ipfs-image-agent /out/ipfs-image-agent

# glibc + libgcc + CA certificates, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/ipfs-image-agent /usr/local/bin/ipfs-image-agent
# Root, on purpose: the agent writes hosts.toml files into containerd's config directory on the
# node (root-owned). The chart drops every capability and mounts the root filesystem read-only.
USER 0:0
LABEL org.opencontainers.image.title="ipfs-image-agent" \
      org.opencontainers.image.description="Node agent: a read-only registry and containerd mirror backed by IPFS" \
      org.opencontainers.image.source="https://github.com/ipfs-image-operator/ipfs-image-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/local/bin/ipfs-image-agent"]
CMD ["serve"]
