"""The ticketing app with the shared services it calls, importable by a deployment process for crash tests.

``tests.systems.ticketing.apps:app``.
"""

import podium
from services.common.app import SERVICES as COMMON
from services.ticketing.app import SERVICES as TICKETING

app = podium.app(services=[*TICKETING, *COMMON])
