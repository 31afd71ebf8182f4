"""The dashboard: every saga of every system, live, with dead letters and approvals a person can act on.

``podium up`` runs it (``python -m podium.dashboard``) and prints its address with a sign-in token; see
docs/dashboard.md. Build it into another ASGI server with :func:`create_app`.
"""

from podium.dashboard._app import COOKIE, HEALTH_PATH, SCOPE, DashboardConfig, create_app

__all__ = ["COOKIE", "HEALTH_PATH", "SCOPE", "DashboardConfig", "create_app"]
