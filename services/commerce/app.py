"""The commerce deployment: seed 002's orders, seed 000's fulfilment, seed 003's order saga, their services.

The shared services they call (payments, messaging, fraud) come from the ``common`` deployment.
"""

import podium
from services.commerce.billing import billing
from services.commerce.fulfillment import fulfillment
from services.commerce.inventory import inventory, stock
from services.commerce.order_orchestrator import orders
from services.commerce.order_saga import order_saga
from services.commerce.shipping import shipping
from services.commerce.warehouse import warehouse

SERVICES = [orders, fulfillment, order_saga, inventory, stock.service, shipping, warehouse, billing]

app = podium.app(services=SERVICES)
