"""Types for a deployment's settings (pydantic-settings classes read from the environment)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

_SECONDS = re.compile(r"^\s*\d+(\.\d+)?\s*$")


def _seconds(value: Any) -> Any:
    """``"2"`` from the environment means 2 seconds (pydantic reads a bare string as ISO 8601 only)."""
    if isinstance(value, str) and _SECONDS.match(value):
        return float(value)
    return value


Deadline = Annotated[timedelta, BeforeValidator(_seconds), Field(gt=timedelta(0))]
"""A business deadline (how long a person or a partner has to answer): positive, written as seconds
(``900``), an ISO 8601 duration (``PT15M``, ``P30D``) or ``HH:MM:SS``. A setting of the deployment, never a
field of a client's request."""
