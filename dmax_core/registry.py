"""Registries of named, configurable classes: decoding policies and tasks.

A class registers itself by name (its `name` class attribute) when its module is imported; its knobs are
the keyword arguments of its `__init__`, with their defaults (the diffusers `register_to_config`
pattern), and its `__init__` checks their values (`check_inputs`), raising `ValueError` that names the
knob. The config layer asks a registry for the names and knobs it may accept, so every knob of every
registered class can be set from a preset or a `key=value` override, and adding a policy or a task is
one class in one new file (its package imports every module in it, see `import_submodules`).

This module holds only the bookkeeping and the small value checks every knob uses; it must not know
any policy or task.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")

REQUIRED = inspect.Parameter.empty


class Registry(Generic[T]):
    """Classes of one kind (`decoding policy`, `task`) by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name.isidentifier():
            raise TypeError(f"{self.kind} class {cls.__qualname__} needs a `name` that is an identifier")
        known = self._classes.get(name)
        if known is not None and known is not cls:
            raise TypeError(f"two {self.kind} classes are named {name!r}: {known.__qualname__}, {cls.__qualname__}")
        self._classes[name] = cls
        return cls

    def names(self) -> tuple[str, ...]:
        return tuple(self._classes)

    def get(self, name: str) -> type[T]:
        try:
            return self._classes[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self._classes) or 'none'}") from None

    def knobs(self, name: str) -> dict[str, Any]:
        """`{knob: default}` in signature order (`REQUIRED` for a knob without a default)."""
        return class_knobs(self.get(name))

    def resolve(self, name: str, knobs: Mapping[str, Any], exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        """Every knob of `name` (but `exclude`) in signature order: the given value, else the default.

        Unknown knobs and required knobs without a value are `ValueError`s naming them."""
        known = {k: v for k, v in self.knobs(name).items() if k not in exclude}
        unknown = sorted(set(knobs) - set(known))
        if unknown:
            raise ValueError(f"{self.kind} {name!r} has no knob(s) {', '.join(unknown)}; "
                             f"its knobs: {', '.join(known) or 'none'}")
        missing = [k for k, default in known.items() if default is REQUIRED and k not in knobs]
        if missing:
            raise ValueError(f"{self.kind} {name!r} needs {', '.join(missing)}")
        return {k: knobs.get(k, default) for k, default in known.items()}

    def build(self, name: str, knobs: Mapping[str, Any]) -> T:
        """An instance with these knobs; unknown or missing knobs and bad values are `ValueError`s."""
        self.resolve(name, knobs)
        try:
            return self.get(name)(**knobs)
        except (TypeError, ValueError) as exc:  # the class's own checks (or a knob of the wrong kind)
            raise ValueError(f"{self.kind} {name!r}: {exc}") from exc


def class_knobs(cls: type) -> dict[str, Any]:
    """The keyword arguments of `cls.__init__` with their defaults, in signature order."""
    signature = inspect.signature(cls.__init__)
    return {p.name: p.default for p in list(signature.parameters.values())[1:]
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def import_submodules(package_name: str, package_path: list[str]) -> None:
    """Import every module of a package, so each class in it registers itself (plugin discovery)."""
    for module in pkgutil.iter_modules(package_path):
        importlib.import_module(f"{package_name}.{module.name}")


# ------------------------------------------------------------------------------- knob value checks
def check_int(knob: str, value: Any, minimum: int) -> int:
    """An int (not a bool) >= `minimum`, else `ValueError` naming the knob."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{knob} must be an int >= {minimum}, got {value!r}")
    return value


def check_optional_int(knob: str, value: Any, minimum: int) -> int | None:
    return None if value is None else check_int(knob, value, minimum)


def check_probability(knob: str, value: Any) -> float:
    """A number in [0, 1], else `ValueError` naming the knob."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{knob} must be a number in [0, 1], got {value!r}")
    return float(value)
