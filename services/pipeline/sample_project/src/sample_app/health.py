"""``python -m sample_app.health``: print the health as JSON; exit 0 when healthy, 1 when not."""

from __future__ import annotations

import json
import sys

from sample_app.service import health


def main() -> int:
    """Print the health report and return the exit status."""
    report = health()
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
