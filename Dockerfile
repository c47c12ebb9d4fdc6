# Multi-stage build on Debian bookworm: build with the -dev packages, run with only the
# runtime libraries, as a non-root user.
FROM debian:bookworm AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config libpqxx-dev libpq-dev librdkafka-dev libboost-dev \
      libyaml-cpp-dev libcli11-dev nlohmann-json3-dev catch2 libnats-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DOUTBOX_BUILD_TESTS=OFF \
    && cmake --build build --target outbox-relay \
    && strip build/relay/outbox-relay

FROM debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libpqxx-6.4 libpq5 librdkafka1 libnats3.4 libyaml-cpp0.7 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin outbox-relay
COPY --from=build /src/build/relay/outbox-relay /usr/local/bin/outbox-relay
# /healthz, /readyz and /metrics must be reachable from outside the container (the binary's
# default is loopback only).
ENV OUTBOX_RELAY_HTTP_LISTEN=0.0.0.0:9464
EXPOSE 9464
USER 10001
ENTRYPOINT ["/usr/local/bin/outbox-relay"]
CMD ["run"]
