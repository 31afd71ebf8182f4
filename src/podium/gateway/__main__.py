"""``python -m podium.gateway``: run the admission-control gateway until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import sys

from podium.gateway._proxy import Gateway


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m podium.gateway",
        description="Admission-control reverse proxy for the Restate ingress: at most N requests in "
        "flight, a short FIFO queue, and 503 + Retry-After for the excess.",
    )
    parser.add_argument("--upstream", required=True, help="ingress base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0: any free port)")
    parser.add_argument(
        "--max-in-flight", type=int, required=True, help="requests forwarded at once (capacity × latency)"
    )
    parser.add_argument("--max-queue", type=int, default=0, help="requests that may wait for a slot (0)")
    parser.add_argument("--queue-timeout", type=float, default=1.0, help="longest wait in the queue, s (1)")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After sent with a 503, s (1)")
    parser.add_argument(
        "--upstream-timeout", type=float, default=600.0, help="longest wait for an answer before 504, s"
    )
    parser.add_argument("--max-body", type=int, default=32 * 2**20, help="largest request body, bytes")
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's loop even if uvloop is there")
    parser.add_argument("--log-level", default="INFO", help="logging level (INFO)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until a signal."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        gateway = Gateway(
            args.upstream,
            host=args.host,
            port=args.port,
            max_in_flight=args.max_in_flight,
            max_queue=args.max_queue,
            queue_timeout=args.queue_timeout,
            retry_after=args.retry_after,
            upstream_timeout=args.upstream_timeout,
            max_body=args.max_body,
        )
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    gateway.serve_forever(use_uvloop=not args.no_uvloop)


if __name__ == "__main__":
    main()
