"""Simulated backends for the pattern examples: a user directory, product data sources, data stores.

Behaviour is decided by test data in the ids, so every failure can be triggered from curl:

| id contains | effect |
|---|---|
| user ``unverified-…`` / ``nokyc-…`` / ``blacklisted-…`` | that validation check answers false |
| user ``broken-…`` | processing that user fails (422) |
| product ``…-noreviews`` / ``…-nopricing`` | that data source fails (503) |
| query ``cold:…`` | the cache misses (fails); ``slowdb:…``: the primary takes 2 s |
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from restate import Context

from podium import Model, Service, TerminalError

directory = Service("UserDirectory")
products = Service("ProductSources")
stores = Service("DataStores")


class UserRef(Model):
    user_id: str = Field(min_length=1)


class ProductRef(Model):
    product_id: str = Field(min_length=1)


class Query(Model):
    query: str = Field(min_length=1)


class Processed(Model):
    user_id: str
    score: int


class Data(Model):
    query: str
    source: str
    rows: list[str]


@directory.handler("EmailVerified")
async def email_verified(ctx: Context, req: UserRef) -> bool:
    return not req.user_id.startswith("unverified-")


@directory.handler("KycCompleted")
async def kyc_completed(ctx: Context, req: UserRef) -> bool:
    return not req.user_id.startswith("nokyc-")


@directory.handler("NotBlacklisted")
async def not_blacklisted(ctx: Context, req: UserRef) -> bool:
    return not req.user_id.startswith("blacklisted-")


@directory.handler("Process")
async def process_user(ctx: Context, req: UserRef) -> Processed:
    if req.user_id.startswith("broken-"):
        raise TerminalError(f"user {req.user_id} cannot be processed", 422)
    await ctx.sleep(timedelta(milliseconds=20 + ctx.random().randint(0, 80)))
    return Processed(user_id=req.user_id, score=sum(map(ord, req.user_id)) % 100)


def _source(name: str, req: ProductRef) -> None:
    if req.product_id.endswith(f"-no{name}"):
        raise TerminalError(f"{name} source unavailable for {req.product_id}", 503)


@products.handler("Details")
async def details(ctx: Context, req: ProductRef) -> dict[str, str]:
    _source("details", req)
    return {"name": f"Product {req.product_id}", "category": "widgets"}


@products.handler("Pricing")
async def pricing(ctx: Context, req: ProductRef) -> dict[str, float]:
    _source("pricing", req)
    return {"price": 19.99, "discount": 0.1}


@products.handler("Inventory")
async def stock(ctx: Context, req: ProductRef) -> dict[str, int]:
    _source("inventory", req)
    return {"onHand": 42}


@products.handler("Reviews")
async def reviews(ctx: Context, req: ProductRef) -> dict[str, float]:
    _source("reviews", req)
    return {"rating": 4.5, "count": 128}


@products.handler("Recommendations")
async def recommendations(ctx: Context, req: ProductRef) -> list[str]:
    _source("recommendations", req)
    return [f"{req.product_id}-accessory", f"{req.product_id}-refill"]


@stores.handler("Primary")
async def primary(ctx: Context, req: Query) -> Data:
    await ctx.sleep(timedelta(seconds=2) if req.query.startswith("slowdb:") else timedelta(milliseconds=150))
    return Data(query=req.query, source="primary", rows=[f"{req.query}#1", f"{req.query}#2"])


@stores.handler("Cache")
async def cache(ctx: Context, req: Query) -> Data:
    if req.query.startswith(("cold:", "slowdb:")):
        raise TerminalError(f"cache miss for {req.query}", 404)
    return Data(query=req.query, source="cache", rows=[f"{req.query}#1", f"{req.query}#2"])


@stores.handler("Replica")
async def replica(ctx: Context, req: Query) -> Data:
    await ctx.sleep(timedelta(seconds=3) if req.query.startswith("slowdb:") else timedelta(milliseconds=400))
    return Data(query=req.query, source="replica", rows=[f"{req.query}#1", f"{req.query}#2"])


SERVICES = [directory, products, stores]
