"""A credential that cannot leak by accident into logs, reports, tracebacks or reprs."""

from __future__ import annotations


class Secret:
    """Holds an API key or token; prints as `Secret('***')`. Call `reveal()` where it is sent."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))
