"""The error type for bad user input, and the two ways every one-line message is phrased.
`main` prints a UserError's message instead of a traceback."""

from __future__ import annotations

from typing import Any, Iterable, TypeVar

Value = TypeVar("Value")


class UserError(ValueError):
    """Bad input (config, dataset, workdir, checkpoint) that the user must fix; never a bug."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an error's message, at most `limit` characters (a one-line message
    quotes its cause, never the cause's traceback-sized detail); the error's type when the
    message is empty. TensorFlow's errors keep their text in `.message`."""
    lines = (getattr(error, "message", None) or str(error)).strip().splitlines()
    return lines[0].strip()[:limit] if lines else type(error).__name__


def not_one_of(field: str, value: Any, accepted: Iterable[Any]) -> str:
    """The message for a value outside its choices: it names the value and every accepted one."""
    return f"{field}={value!r} is not one of {', '.join(map(repr, accepted))}"


def check_one_of(field: str, value: Value, accepted: Iterable[Any],
                 error: type[Exception] = ValueError) -> Value:
    """`value`, or `error` with the `not_one_of` message."""
    accepted = tuple(accepted)
    if value not in accepted:
        raise error(not_one_of(field, value, accepted))
    return value
