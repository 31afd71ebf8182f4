"""The insurance deployment: the claim saga, the policy catalogue and the records provider.

Payments and email are in ``common``.
"""

import restate

import podium
from services.insurance.policies import policies
from services.insurance.records import records
from services.insurance.saga import claims

SERVICES: list[restate.Service | restate.VirtualObject | restate.Workflow] = [claims, policies, records]

app = podium.app(services=SERVICES)
