"""Type checks of the public API: checked by mypy (``make check``), never run.

A line that must be rejected carries ``# type: ignore[<code>]``; mypy's ``warn_unused_ignores`` (on in
strict mode) fails the check if the error it expects is not there.
"""

from __future__ import annotations

from restate import Context, ObjectContext

from podium import IngressClient, Model, Service, VirtualObject, call, send

svc = Service("TypingService")
obj = VirtualObject("TypingObject")


class Ask(Model):
    text: str


class Answer(Model):
    length: int


class Other(Model):
    flag: bool


@svc.handler("Measure")
async def measure(ctx: Context, req: Ask) -> Answer:
    return Answer(length=len(req.text))


@obj.handler("Keep")
async def keep(ctx: ObjectContext, req: Ask) -> Answer:
    return Answer(length=len(req.text))


async def right(ctx: Context) -> int:
    answer: Answer = await call(ctx, measure, Ask(text="hi"))
    kept: Answer = await call(ctx, keep, Ask(text="hi"), key="k")
    send(ctx, keep, Ask(text="later"), key="k")
    return answer.length + kept.length


async def wrong_argument(ctx: Context) -> None:
    await call(ctx, measure, Other(flag=True))  # type: ignore[arg-type]


async def wrong_result(ctx: Context) -> None:
    result: Other = await call(ctx, measure, Ask(text="hi"))  # type: ignore[arg-type]
    del result


def outside(client: IngressClient) -> int:
    answer: Answer = client.call(measure, Ask(text="hi"))
    client.call(measure, Other(flag=True))  # type: ignore[arg-type]
    return answer.length
