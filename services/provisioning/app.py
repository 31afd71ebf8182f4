"""The provisioning deployment: the tenant-provisioning system's own services (email is in ``common``)."""

import podium
from services.provisioning.orchestrator import orchestrator
from services.provisioning.resources import billing, buckets, databases, realms

SERVICES = [orchestrator, databases, buckets, realms, billing]

app = podium.app(services=SERVICES)
