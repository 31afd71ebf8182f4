"""The shop (seed 004): its deployments, each a process group of its own that owns its data.

- ``shop``: the event-sourced order and its checkout saga (``ShopOrder``), and the read side
  (``ShopReadModels`` and its queries), which owns the ``orders`` SQL store;
- ``shop-inventory``: stock, holds and inventory events (``ShopInventory``), owning the ``inventory``
  store;
- ``shop-shipping``: carriers, labels and tracking (``ShopShipping``);
- ``shop-notify``: customers' preferences and the notifications sent to them (``ShopCustomer``).

Payments come from the ``common`` deployment (``PaymentService``), as the low-stock alert emails do
(``NotificationService``). ``[tool.podium]`` in pyproject.toml gives each deployment its port and
worker count, so a busy inventory gets more workers without the rest (docs/performance.md says which
deployment is the bottleneck at 167 orders/s).
"""

import restate

import podium
from services.common.app import SERVICES as COMMON
from services.shop.checkout import orders  # ShopOrder, with the checkout's handlers on it
from services.shop.customers import customers
from services.shop.inventory import inventory
from services.shop.projections import audit, customer_orders, order_view, read_models
from services.shop.shipping import shipping

ORDERS: list[restate.Service | restate.VirtualObject | restate.Workflow] = [
    orders,
    read_models,
    order_view,
    customer_orders,
    audit,
]
INVENTORY: list[restate.Service | restate.VirtualObject | restate.Workflow] = [inventory]
SHIPPING: list[restate.Service | restate.VirtualObject | restate.Workflow] = [shipping]
NOTIFY: list[restate.Service | restate.VirtualObject | restate.Workflow] = [customers]
SERVICES = [*ORDERS, *INVENTORY, *SHIPPING, *NOTIFY]
"""Every service of the shop (its deployments together)."""

app = podium.app(services=ORDERS)
"""What ``podium up`` serves as ``shop``: orders and the read side."""
inventory_app = podium.app(services=INVENTORY)
shipping_app = podium.app(services=SHIPPING)
notify_app = podium.app(services=NOTIFY)

standalone_app = podium.app(services=[*SERVICES, *COMMON])
"""The whole shop with the shared services it calls in one process, for tests on an engine of their own."""

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
``UNLIMITED-…`` SKUs start with a billion units, so the order never runs out of stock. The benchmark's
default shop load is a catalogue with contended SKUs instead (benchmarks/); this one-fresh-SKU order is
what the shop's own test checks the benchmark can place.
"""
