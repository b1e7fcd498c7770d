"""Timeouts as the public API takes them: seconds as int or float, ``None`` = forever."""

from __future__ import annotations

from winipc.errors import InvalidParameter


def seconds(value: float | None, what: str) -> float | None:
    """Validate a timeout argument.

    Args:
        value: seconds >= 0, or None (wait forever).
        what: the argument's name, for the error message.

    Returns:
        ``float(value)``, or None.

    Raises:
        InvalidParameter: a negative, NaN, bool or non-numeric value (named in the message).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InvalidParameter(f"{what} must be seconds >= 0 or None (forever), not {value!r}")
    return float(value)
