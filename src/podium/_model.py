"""The base class for payloads on the wire: Python names in code, the seeds' camelCase names in JSON."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Model(BaseModel):
    """A pydantic model whose JSON field names are camelCase (``customer_id`` is ``customerId``).

    Both spellings are accepted on input; output always uses the camelCase alias, which is what the
    seeds' HTTP contracts use. Unknown fields are ignored, so older clients keep working when a model
    grows.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )
