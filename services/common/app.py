"""The common deployment: services every reference system shares (payments, messaging, fraud)."""

import podium
from services.common.fraud import fraud, velocity
from services.common.notifications import notifications
from services.common.payments import payments

SERVICES = [payments, notifications, fraud, velocity]

app = podium.app(services=SERVICES)
