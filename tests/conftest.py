"""Shared by every test: the simulated providers write under a temporary directory, never .podium/."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_PROVIDERS = Path(tempfile.mkdtemp(prefix="podium-test-data-"))
# Set at import, before any service code runs: in-process deployments read it when a handler first
# touches a provider, and deployment processes inherit it.
os.environ["PODIUM_DATA_DIR"] = str(_PROVIDERS)
