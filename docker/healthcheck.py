#!/usr/bin/env python3
"""Container health check: exit 0 when this container's Plankline process answers.

Installed as ``<prefix>/bin/plankline-healthcheck`` by ``docker/install.sh`` and called by
each image's ``HEALTHCHECK`` (Kubernetes uses its own probes on the same endpoints):

- ``plankline-healthcheck http`` (pipeline services): ``GET /healthz`` on
  ``127.0.0.1:$PLANKLINE_HTTP_PORT`` (default 8080), answered by the shared runner while its
  loop is alive. ``/readyz`` (partitions assigned) is for readiness, not liveness: a
  service waiting for a rebalance is healthy.
- ``plankline-healthcheck grpc`` (gateway): ``grpc.health.v1.Health/Check`` on
  ``127.0.0.1:$PLANKLINE_GATEWAY_PORT`` (default 50051) must say SERVING. With TLS
  (``PLANKLINE_GATEWAY_TLS_CERT`` set) the certificate names a public host and mutual TLS
  needs a client certificate, so the check is a TCP connect to the port.

Standard library plus grpcio (already in the image); one line on failure, exit 1.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request

TIMEOUT_S = 3.0


def check_http() -> str:
    port = int(os.environ.get("PLANKLINE_HTTP_PORT", "8080"))
    url = f"http://127.0.0.1:{port}/healthz"
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")
    return url


def check_grpc() -> str:
    port = int(os.environ.get("PLANKLINE_GATEWAY_PORT", "50051"))
    address = f"127.0.0.1:{port}"
    if os.environ.get("PLANKLINE_GATEWAY_TLS_CERT"):
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S):
            return f"{address} (TLS: TCP connect)"
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        raise RuntimeError(f"{address} health is {name}")
    return address


def main(argv: list[str]) -> int:
    checks = {"http": check_http, "grpc": check_grpc}
    if len(argv) != 1 or argv[0] not in checks:
        print("usage: plankline-healthcheck http|grpc", file=sys.stderr)
        return 2
    try:
        where = checks[argv[0]]()
    except Exception as error:  # any failure is "unhealthy", said in one line
        print(f"unhealthy: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"healthy: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
