"""Input validation turns every caller mistake into one readable line (pure, no engine)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import Field

from podium import Model
from podium._services import AliasJsonSerde, ValidatingSerde, _Invalid


class Inner(Model):
    check_in: dt.date
    guests: int = Field(gt=0)


class Outer(Model):
    customer_id: str
    inner: Inner


def parse(raw: bytes) -> Any:
    return ValidatingSerde(Outer).deserialize(raw)


def test_valid_input_uses_camel_case_names() -> None:
    value = parse(b'{"customerId": "c", "inner": {"checkIn": "2024-01-02", "guests": 1}}')
    assert value == Outer(customer_id="c", inner=Inner(check_in=dt.date(2024, 1, 2), guests=1))


def test_python_names_are_accepted_too() -> None:
    value = parse(b'{"customer_id": "c", "inner": {"check_in": "2024-01-02", "guests": 1}}')
    assert isinstance(value, Outer)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "request body is empty: expected a JSON value"),
        (b"   ", "request body is empty: expected a JSON value"),
        (b"{oops", "request body is not valid JSON: "),
        (b'{"inner": {"checkIn": "2024-01-02", "guests": 1}}', "invalid request: customerId: field required"),
        (
            b'{"customerId": "c", "inner": {"checkIn": "x", "guests": 0}}',
            "invalid request: inner.checkIn: Input should be a valid date or datetime, input is too short "
            '(got "x"); inner.guests: Input should be greater than 0 (got 0)',
        ),
        (b"[]", "invalid request: body: Input should be an object (got [])"),
    ],
)
def test_invalid_input_names_the_field_and_problem(raw: bytes, message: str) -> None:
    value = parse(raw)
    assert isinstance(value, _Invalid)
    assert value.message.startswith(message)


def test_long_inputs_are_not_echoed() -> None:
    value = parse(
        b'{"customerId": ' + b"[" + b"1," * 100 + b'1], "inner": {"checkIn": "2024-01-02", "guests": 1}}'
    )
    assert isinstance(value, _Invalid)
    assert "(got" not in value.message


def test_output_serde_writes_aliases_and_reads_them_back() -> None:
    serde = AliasJsonSerde(Inner)
    raw = serde.serialize(Inner(check_in=dt.date(2024, 1, 2), guests=2))
    assert raw == b'{"checkIn":"2024-01-02","guests":2}'
    assert serde.deserialize(raw) == Inner(check_in=dt.date(2024, 1, 2), guests=2)
    assert serde.serialize(None) == b""
    assert serde.deserialize(b"") is None
