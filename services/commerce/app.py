"""The commerce deployment: seed 002's order orchestration and its services (shared ones: ``common``)."""

import restate

from services.commerce.billing import billing
from services.commerce.inventory import inventory, stock
from services.commerce.order_orchestrator import orders
from services.commerce.shipping import shipping
from services.commerce.warehouse import warehouse

SERVICES = [orders, inventory, stock.service, shipping, warehouse, billing]

app = restate.app(services=SERVICES)
