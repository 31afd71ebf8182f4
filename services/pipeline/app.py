"""The pipeline deployment: the CI/CD pipeline (seed 000 ex 4), the deployment saga (seed 003 ex 4)."""

import restate

import podium
from services.pipeline.approval import gates
from services.pipeline.orchestrator import pipelines
from services.pipeline.saga import sagas
from services.pipeline.stages import SERVICES as STAGES

SERVICES: list[restate.Service | restate.VirtualObject | restate.Workflow] = [
    *STAGES,
    gates,
    pipelines,
    sagas,
]

app = podium.app(services=SERVICES)
