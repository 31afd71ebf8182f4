"""Podium's errors.

Every error a handler can raise to end an invocation is a ``restate.TerminalError`` (the engine does not
retry it and returns its status code to the caller). Anything else is retried by the engine, with the
handler's finite retry policy.

    TerminalError (restate)
    ├── InvalidInput                 400: the caller's request does not validate; names field and problem
    └── SagaError                    a saga ended without completing
        ├── SagaCompensated          a step failed and every compensation ran: nothing is left held
        ├── CompensationFailed       a compensation kept failing: dead letters need a person
        └── ManualInterventionNeeded past the pivot, a step kept failing: forward recovery needs a person
"""

from __future__ import annotations

from restate import TerminalError


class InvalidInput(TerminalError):
    """The request does not validate. Status 400; the message names each field and its problem."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=400)


__all__ = ["InvalidInput", "TerminalError"]
