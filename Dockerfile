# syntax=docker/dockerfile:1
#
# pgchain image: a release build of the dispatcher plus the SQL and pipeline
# files it reads at run time.
#
#   docker build -t pgchain .
#   docker run --rm pgchain --help
#
# docker-compose.yml builds this image for its `migrate` and `pgchain` services.

# ---------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------
FROM rust:1-bookworm AS builder

# rdkafka builds its bundled librdkafka from source (./configure + make, which
# needs gcc, perl and python3); libz-sys finds zlib through pkg-config. Most of
# this is already in the rust image; listing it keeps the build independent of
# what the base image happens to ship.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential perl python3 pkg-config zlib1g-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# The whole context (filtered by .dockerignore): Cargo.toml, Cargo.lock,
# build.rs, src/, sql/, pipelines.yaml and examples/; build.rs embeds pgchain's
# runtime (sql/pgchain/) and the example projects into the binary.
COPY . .

# Cache mounts keep the crate registry and target/ between builds, so a change
# to one source file recompiles pgchain, not librdkafka and every dependency.
# target/ is a cache mount and is gone after this step, hence the copy out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 0755 target/release/pgchain /usr/local/bin/pgchain

# ---------------------------------------------------------------------------
# Runtime stage
# ---------------------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates and libssl3 for TLS to brokers (SASL_SSL), databases and
# the alert webhook; curl for the healthcheck against /healthz.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/*

# pgchain keeps its state in PostgreSQL, not on local disk, so its user needs no
# home and no write access; the files below stay owned by root.
RUN useradd --system --user-group --uid 10001 \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin pgchain

COPY --from=builder /usr/local/bin/pgchain /usr/local/bin/pgchain
# Defaults baked into the image; docker-compose.yml mounts the host's copies
# over them so they can be edited without a rebuild.
COPY sql /opt/pgchain/sql
COPY pipelines.yaml /opt/pgchain/pipelines.yaml

# Relative paths in pipelines.yaml and the `-c pipelines.yaml` default below
# resolve here.
WORKDIR /opt/pgchain
USER pgchain

ENTRYPOINT ["pgchain"]
CMD ["run", "-c", "pipelines.yaml"]
