"""Self-contained apps for system tests: a system's services plus the shared ones it calls."""

import podium
from services.banking.app import SERVICES as BANKING
from services.commerce.app import SERVICES as COMMERCE
from services.common.app import SERVICES as COMMON
from services.insurance.app import SERVICES as INSURANCE
from services.patterns.app import app as patterns
from services.provisioning.app import SERVICES as PROVISIONING
from services.travel.app import SERVICES as TRAVEL

travel = podium.app(services=[*TRAVEL, *COMMON])
commerce = podium.app(services=[*COMMERCE, *COMMON])
banking = podium.app(services=[*BANKING, *COMMON])
provisioning = podium.app(services=[*PROVISIONING, *COMMON])
insurance = podium.app(services=[*INSURANCE, *COMMON])

__all__ = ["banking", "commerce", "insurance", "patterns", "provisioning", "travel"]
