"""Pseudo-members for IntEnums whose unregistered values must still be representable."""

from __future__ import annotations

import enum
from typing import TypeVar

E = TypeVar("E", bound=enum.IntEnum)


def pseudo_member(cls: type[E], value: int, name: str) -> E:
    """The (cached) member of ``cls`` for an unregistered ``value``, named ``name``."""
    pseudo = int.__new__(cls, value)
    pseudo._name_ = name
    pseudo._value_ = value
    member: E = cls._value2member_map_.setdefault(value, pseudo)  # type: ignore[assignment]
    return member
