"""An admission-control gateway: a small HTTP/1.1 reverse proxy in front of the Restate ingress.

Offered more load than the engine and services can take, an unbounded stack piles every request into
the Python services and its goodput collapses. The gateway forwards at most ``max_in_flight`` requests at
once, lets a few more wait briefly in a FIFO queue, and answers the rest at once with ``503`` and
``Retry-After`` without forwarding them, so admitted requests keep finishing fast::

    from podium.gateway import Gateway

    Gateway("http://127.0.0.1:8080", port=8000, max_in_flight=85, max_queue=85).serve_forever()

or ``python -m podium.gateway --upstream http://127.0.0.1:8080 --port 8000 --max-in-flight 85``.
``GET /podium/gateway/stats`` answers the counters (:class:`GatewayStats`) as JSON. See
``docs/gateway.md`` for choosing the limits.
"""

from podium.gateway._proxy import STATS_PATH, Gateway, GatewayStats

__all__ = ["STATS_PATH", "Gateway", "GatewayStats"]
