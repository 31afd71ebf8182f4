"""The provisioning app with the shared services it calls, importable by a deployment process."""

import restate

from services.common.app import SERVICES as COMMON
from services.provisioning.app import SERVICES as PROVISIONING

app = restate.app(services=[*PROVISIONING, *COMMON])
