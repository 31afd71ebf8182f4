"""The delivery app with the shared services it calls, importable by a deployment process."""

import podium
from services.common.app import SERVICES as COMMON
from services.delivery.app import SERVICES

app = podium.app(services=[*SERVICES, *COMMON])
