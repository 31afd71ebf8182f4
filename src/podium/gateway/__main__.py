"""``python -m podium.gateway``: run the public door until SIGTERM or SIGINT (``podium up`` starts it).

It logs on stderr, one JSON object per line with ``system`` set to ``gateway`` (``--log-format json``,
the default when ``PODIUM_LOG_FORMAT=json``), or readable text lines. With ``--metrics-port`` it serves
its Prometheus metrics on that loopback port; with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set it exports a server
span per request over OTLP gRPC (service ``gateway``, or ``OTEL_SERVICE_NAME``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from podium._logging import LOG_FORMAT_ENV, LOG_FORMATS, LOG_LEVEL_ENV, configure_logging
from podium._telemetry import tracer_provider, tracing_endpoint
from podium.gateway._clients import AuthService, ClientStore
from podium.gateway._door import Door, load_edge_routes
from podium.gateway._proxy import Gateway, ServiceLimit
from podium.gateway._routes import RouteTable
from podium.gateway._tokens import AUDIENCE, ISSUER, TokenIssuer, TokenVerifier
from podium.runtime import KeyFileError, KeyPair, load_public_keys

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m podium.gateway",
        description="The public door in front of the Restate ingress: access tokens and scopes, public "
        "handlers only, at most N requests in flight, a short FIFO queue, and 503 + Retry-After for the "
        "excess.",
    )
    parser.add_argument("--upstream", required=True, help="ingress base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument(
        "--admin-url", required=True, help="the engine's admin API, for its public handlers (loopback)"
    )
    parser.add_argument(
        "--issuer-key", type=Path, required=True, help="the token issuer's Ed25519 private key (PEM, 0600)"
    )
    parser.add_argument(
        "--retired-keys",
        type=Path,
        default=None,
        help="folder of retired issuer public keys (*.pub.pem) whose tokens are still accepted",
    )
    parser.add_argument("--clients", type=Path, default=None, help="client store: serve POST /auth/token")
    parser.add_argument(
        "--edge", action="append", default=[], help="edge routes to serve, package.module:attribute"
    )
    parser.add_argument("--issuer", default=ISSUER, help=f"required iss of tokens ({ISSUER})")
    parser.add_argument("--audience", default=AUDIENCE, help=f"required aud of tokens ({AUDIENCE})")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0: any free port)")
    parser.add_argument(
        "--max-in-flight", type=int, required=True, help="requests forwarded at once (capacity × latency)"
    )
    parser.add_argument("--max-queue", type=int, default=0, help="requests that may wait for a slot (0)")
    parser.add_argument(
        "--service-limit",
        action="append",
        default=[],
        metavar="SERVICE=IN_FLIGHT[/QUEUE]",
        help="slots and a queue of a service's own, apart from the shared ones (repeatable)",
    )
    parser.add_argument("--queue-timeout", type=float, default=1.0, help="longest wait in the queue, s (1)")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After sent with a 503, s (1)")
    parser.add_argument(
        "--upstream-timeout", type=float, default=600.0, help="longest wait for an answer before 504, s"
    )
    parser.add_argument("--max-body", type=int, default=2**20, help="largest request body, bytes (1 MiB)")
    parser.add_argument("--max-response", type=int, default=4 * 2**20, help="largest answer, bytes (4 MiB)")
    parser.add_argument("--max-connections", type=int, default=256, help="client connections at once (256)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port (default: none; never on the public port)",
    )
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="address of the metrics port (default 127.0.0.1)"
    )
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's loop even if uvloop is there")
    parser.add_argument(
        "--log-level",
        default=os.environ.get(LOG_LEVEL_ENV) or "INFO",
        help=f"lowest level logged (${LOG_LEVEL_ENV}, else INFO)",
    )
    from_env = os.environ.get(LOG_FORMAT_ENV, "").strip().lower()
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=from_env if from_env in LOG_FORMATS else "text",
        help=f"JSON lines or text on stderr (${LOG_FORMAT_ENV}, else text)",
    )
    return parser.parse_args(argv)


def build(args: argparse.Namespace, *, tracing: TracerProvider | None = None) -> Gateway:
    """The gateway the command line describes (tracing its requests with ``tracing``, if given).

    Raises:
        KeyFileError: The issuer key cannot be used.
        ValueError: A limit or URL that does not make sense.
    """
    issuer_key = KeyPair.load(args.issuer_key)
    trusted = {issuer_key.key_id: issuer_key.public_key}
    if args.retired_keys is not None:
        trusted.update(load_public_keys(args.retired_keys))
    verifier = TokenVerifier(trusted, issuer=args.issuer, audience=args.audience)
    auth = None
    if args.clients is not None:
        issuer = TokenIssuer(issuer_key, issuer=args.issuer, audience=args.audience)
        auth = AuthService(ClientStore(args.clients), issuer)
    edge = [route for spec in args.edge for route in load_edge_routes(spec)]
    door = Door(RouteTable(args.admin_url), verifier, auth=auth, edge=edge)
    return Gateway(
        args.upstream,
        door=door,
        host=args.host,
        port=args.port,
        max_in_flight=args.max_in_flight,
        max_queue=args.max_queue,
        service_limits=dict(ServiceLimit.parse(spec) for spec in args.service_limit),
        queue_timeout=args.queue_timeout,
        retry_after=args.retry_after,
        upstream_timeout=args.upstream_timeout,
        max_body=args.max_body,
        max_response=args.max_response,
        max_connections=args.max_connections,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        tracer_provider=tracing,
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until a signal."""
    args = parse_args(argv)
    try:
        configure_logging(system="gateway", level=args.log_level, json=args.log_format == "json")
        if logging.getLogger().level > logging.DEBUG:
            # The route table reads the engine's registry every few seconds, and httpx logs each request
            # at INFO: a line every few seconds that says nothing (errors are logged by the table).
            logging.getLogger("httpx").setLevel(logging.WARNING)
        tracing = None if tracing_endpoint() is None else tracer_provider("gateway")
        gateway = build(args, tracing=tracing)
    except (KeyFileError, ValueError, ImportError, TypeError) as exc:
        sys.exit(f"error: {exc}")
    try:
        gateway.serve_forever(use_uvloop=not args.no_uvloop)
    finally:
        if tracing is not None:
            tracing.shutdown()  # export the last batch of spans before the process ends


if __name__ == "__main__":
    main()
