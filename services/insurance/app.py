"""The insurance deployment: the claim saga, the policy catalogue and the records provider.

Payments and email are in ``common``.
"""

import restate

from services.insurance.policies import policies
from services.insurance.records import records
from services.insurance.saga import claims

SERVICES: list[restate.Service | restate.VirtualObject | restate.Workflow] = [claims, policies, records]

app = restate.app(services=SERVICES)
