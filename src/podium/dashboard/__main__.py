"""``python -m podium.dashboard``: serve the dashboard until SIGTERM or SIGINT (``podium up`` starts it)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from podium._logging import LOG_FORMAT_ENV, configure_logging
from podium.dashboard._app import DashboardConfig, create_app
from podium.gateway._tokens import AUDIENCE, ISSUER, TokenVerifier
from podium.runtime import KeyFileError, KeyPair, load_public_keys, serve_forever


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m podium.dashboard",
        description="Every saga of every system, live, with dead letters and approvals to act on.",
    )
    parser.add_argument("--admin-url", required=True, help="the engine's admin API (loopback)")
    parser.add_argument("--ingress-url", required=True, help="the trusted ingress, where actions go")
    parser.add_argument(
        "--issuer-key", type=Path, required=True, help="the token issuer's key (its public half verifies)"
    )
    parser.add_argument(
        "--retired-keys", type=Path, default=None, help="folder of retired issuer public keys (*.pub.pem)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve the dashboard."""
    args = parse_args(argv)
    configure_logging(system="dashboard", json=os.environ.get(LOG_FORMAT_ENV, "json") == "json")
    # httpx logs every query to the engine at INFO: noise, where errors are logged by the dashboard.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        issuer = KeyPair.load(args.issuer_key)
        keys = {issuer.key_id: issuer.public_key}
        if args.retired_keys is not None:
            keys.update(load_public_keys(args.retired_keys))
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    config = DashboardConfig(
        admin_url=args.admin_url,
        ingress_url=args.ingress_url,
        verifier=TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE),
    )
    serve_forever(create_app(config), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
