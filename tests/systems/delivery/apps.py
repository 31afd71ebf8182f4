"""The delivery app with the shared services it calls, importable by a deployment process."""

import restate

from services.common.app import SERVICES as COMMON
from services.delivery.app import SERVICES

app = restate.app(services=[*SERVICES, *COMMON])
