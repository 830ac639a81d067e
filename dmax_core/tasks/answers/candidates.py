"""Ordered candidate lists: both DMax scorers try candidate answers in a fixed order, each once."""

from __future__ import annotations

from collections.abc import Iterable


def dedupe(items: Iterable[str]) -> list[str]:
    """Non-empty items, first occurrence kept, order kept."""
    return list(dict.fromkeys(item for item in items if item))
