"""What the shop benchmark orders: a catalogue of SKUs with Zipf popularity, and customers who come back.

Every request's body is made from its key (the order id) with a random generator seeded by that key, so
a body is a pure function of its key (a retried order is the same order) while the keys themselves, fresh
for every request, spread the draws over the whole distribution. With the defaults (1,000 SKUs, Zipf
s = 1.1) the hottest SKU is 18% of the lines drawn and is in about a third of the orders (55 orders/s at
167/s): the stock of a few SKUs is contended, as in a real shop, where one fresh SKU per order (the
``fresh`` body) contends nothing. The SKUs are ``UNLIMITED-CAT-0000`` (the hottest) to
``UNLIMITED-CAT-0999``: the shop starts every ``UNLIMITED-…`` SKU with a billion units, so stock never
runs out during a run.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from typing import Any

SHOP_PATH = "/ShopOrder/{key}/Place"
"""Where the shop takes an order; ``{key}`` is the order id."""

FRESH_BODY = (
    '{"customerId": "bench-{key}", "email": "bench-{key}@example.com",'
    ' "items": [{"sku": "UNLIMITED-{key}", "quantity": 1, "unitPrice": 19.99}],'
    ' "shippingAddress": {"street": "1 Main St", "city": "Springfield", "zip": "12345", "country": "US"},'
    ' "paymentMethod": "card-visa"}'
)
"""The shop's own benchmark body (``BENCH_FLOW`` in ``services/shop/app.py``) when the shop does not
declare one: one line of a fresh SKU per order, a fresh customer per order."""


class Catalogue:
    """Makes each order's body from its key: 1 to ``max_lines`` distinct SKUs drawn by Zipf popularity.

    Args:
        template: A Place body (JSON, ``{key}`` for the order id) whose other fields (the shipping
            address, the payment method) every order keeps; its customer and items are replaced.
        skus: How many SKUs the catalogue holds.
        zipf: The exponent s of the popularity law: the SKU of rank k is drawn in proportion to 1/k**s.
        customers: How many customers place the orders (uniformly), so each has several orders.
        max_lines: Lines per order, drawn uniformly from 1 to this (distinct SKUs).
        max_quantity: Units per line, drawn uniformly from 1 to this.
        seed: Mixed into every key's generator: another seed, other orders for the same keys.
    """

    def __init__(
        self,
        template: str = FRESH_BODY,
        *,
        skus: int = 1_000,
        zipf: float = 1.1,
        customers: int = 5_000,
        max_lines: int = 3,
        max_quantity: int = 2,
        seed: int = 0,
    ) -> None:
        if not 1 <= max_lines <= skus:
            raise ValueError(f"max_lines must be between 1 and the {skus} SKUs, not {max_lines}")
        self.template = template
        self.skus = skus
        self.zipf = zipf
        self.customers = customers
        self.max_lines = max_lines
        self.max_quantity = max_quantity
        self.seed = seed
        self._ranks = range(skus)
        self._cumulative = list(itertools.accumulate(math.pow(k + 1, -zipf) for k in range(skus)))
        self._sku_digits = max(4, len(str(skus - 1)))
        self._customer_digits = max(4, len(str(customers - 1)))

    def sku(self, index: int) -> str:
        """The SKU of popularity rank ``index`` (0 is the hottest)."""
        return f"UNLIMITED-CAT-{index:0{self._sku_digits}d}"

    @staticmethod
    def price(index: int) -> float:
        """The unit price of SKU ``index``: fixed by the index, whole cents between 1.99 and 499.99."""
        return (199 + (index * 7919) % 49_801) / 100

    def share(self, index: int) -> float:
        """The share of drawn lines that are SKU ``index``."""
        below = self._cumulative[index - 1] if index else 0.0
        return (self._cumulative[index] - below) / self._cumulative[-1]

    def order(self, key: str) -> dict[str, Any]:
        """The order with id ``key``: the template's fields, a customer, and its lines."""
        rng = random.Random(f"{self.seed}/{key}")
        wanted = rng.randint(1, self.max_lines)
        chosen: list[int] = []
        while len(chosen) < wanted:
            (index,) = rng.choices(self._ranks, cum_weights=self._cumulative)
            if index not in chosen:
                chosen.append(index)
        customer = f"bench-cust-{rng.randrange(self.customers):0{self._customer_digits}d}"
        body: dict[str, Any] = json.loads(self.template.replace("{key}", key))
        body["customerId"] = customer
        body["email"] = f"{customer}@example.com"
        body["items"] = [
            {"sku": self.sku(i), "quantity": rng.randint(1, self.max_quantity), "unitPrice": self.price(i)}
            for i in chosen
        ]
        return body

    def body(self, key: str) -> str:
        """The JSON body of the order with id ``key`` (what the load generator sends)."""
        return json.dumps(self.order(key), separators=(",", ":"))
