"""One base for unirt's enums of words (statuses, outcomes, evidence): a ``str`` subclass, so that
JSON, logs and comparisons with the plain word keep working, printed as the word itself."""

from __future__ import annotations

from enum import Enum


class Word(str, Enum):
    """An enum whose members are words: ``str(Word.X)`` and ``f"{Word.X}"`` give the word."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)
