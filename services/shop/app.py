"""The shop deployment (seed 004): an event-sourced order, its saga, stock, shipping, the read side.

Payments and notifications come from the ``common`` deployment (``PaymentService``,
``NotificationService``).
"""

import restate

import podium
from services.common.app import SERVICES as COMMON
from services.shop.checkout import order_saga
from services.shop.customers import customers, notifier
from services.shop.inventory import stock
from services.shop.order import orders
from services.shop.projections import audit, customer_orders, order_view
from services.shop.shipping import shipping

SERVICES: list[restate.Service | restate.VirtualObject | restate.Workflow] = [
    orders,
    order_saga,
    stock,
    shipping,
    customers,
    notifier,
    order_view,
    customer_orders,
    audit,
]

app = podium.app(services=SERVICES)
"""What ``podium up`` serves: the shop's own services (``common`` serves payments and notifications)."""

standalone_app = podium.app(services=[*SERVICES, *COMMON])
"""The shop with the shared services it calls, for tests and benchmarks on an engine of their own."""

BENCH_FLOW = (
    "services.shop.app:standalone_app",
    "/ShopOrder/{key}/Place",
    '{"customerId": "bench-{key}", "email": "bench-{key}@example.com",'
    ' "items": [{"sku": "UNLIMITED-{key}", "quantity": 1, "unitPrice": 19.99}],'
    ' "shippingAddress": {"street": "1 Main St", "city": "Springfield", "zip": "12345", "country": "US"},'
    ' "paymentMethod": "card-visa"}',
)
"""How a benchmark places one order that completes: the app, the path and a JSON body template.

Replace every ``{key}`` by the order id with ``str.replace`` (not ``str.format``: the JSON has braces).
``UNLIMITED-…`` SKUs start with a billion units, so the order never runs out of stock; one SKU per order
keeps the benchmark from measuring a single hot stock object, which would serialise every order.
"""
