"""The provisioning app with the shared services it calls, importable by a deployment process."""

import podium
from services.common.app import SERVICES as COMMON
from services.provisioning.app import SERVICES as PROVISIONING

app = podium.app(services=[*PROVISIONING, *COMMON])
