"""Disjoint train/validation/test splits by rejection sampling: the one copy every task generator uses.

Why one helper: the held-out guarantees (no question text shared between splits or repeated inside one,
the test split independent of the training-set size) are what make every accuracy in dmax honest, so
they must not be re-implemented per task.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

P = TypeVar("P")

__all__ = ["draw_disjoint_splits"]


def draw_disjoint_splits(
    draw: Callable[[random.Random], P],
    question_of: Callable[[P], str],
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int,
    space: int | None,
) -> dict[str, list[P]]:
    """Train/validation/test lists whose question texts never overlap (and never repeat inside a split).

    One ``random.Random(seed)`` stream is consumed in the order test, validation, train, skipping any
    question already taken, so the test set depends only on ``(n_test, seed, task knobs)``: growing the
    training set never changes what is held out. ``space`` is the exact number of distinct questions the
    knobs allow (``None`` when it is astronomically large); a request above it fails at once, and a request
    that nearly exhausts it fails loudly instead of looping (almost) forever.
    """
    sizes = {"test": n_test, "validation": n_val, "train": n_train}
    for key, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"n_{key} must be an int >= 0, got {size!r}")
    requested = n_train + n_val + n_test
    if space is not None and requested > space:
        raise ValueError(
            f"requested {requested} distinct questions (train {n_train} + validation {n_val} + "
            f"test {n_test}) but these difficulty settings allow only {space}; "
            "widen the knobs (steps, names, objects, verbs)"
        )
    rng = random.Random(seed)
    seen: set[str] = set()
    out: dict[str, list[P]] = {}
    max_misses = 1000 + 50 * requested
    misses = 0
    for split in ("test", "validation", "train"):
        items: list[P] = []
        while len(items) < sizes[split]:
            item = draw(rng)
            question = question_of(item)
            if question in seen:
                misses += 1
                if misses > max_misses:
                    raise ValueError(
                        f"could not draw {requested} distinct questions after {misses} duplicate draws "
                        f"(space {space}); the request is too close to the size of the question space"
                    )
                continue
            seen.add(question)
            items.append(item)
        out[split] = items
    return {"train": out["train"], "validation": out["validation"], "test": out["test"]}
