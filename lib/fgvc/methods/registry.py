"""One registry maps method names to classes: `create_method`, `list_methods`."""
from __future__ import annotations

import importlib
from dataclasses import fields

from .base import Method, config_fields

_METHODS: dict[str, type[Method]] = {}
# Modules that register methods on import (one file per method).
_MODULES = ["baseline", "ma_ea", "lafe", "pcanet", "focus"]


def register(cls: type[Method]) -> type[Method]:
    _METHODS[cls.name] = cls
    return cls


def _load_all() -> None:
    for mod in _MODULES:
        try:
            importlib.import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as e:  # a method not written yet is simply not listed
            if e.name != f"{__package__}.{mod}":
                raise


def list_methods() -> list[str]:
    _load_all()
    return sorted(_METHODS)


def method_class(name: str) -> type[Method]:
    _load_all()
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {sorted(_METHODS)}")
    return _METHODS[name]


def create_method(name: str, num_classes: int, **cfg) -> Method:
    """Build method `name` for `num_classes` classes; `cfg` sets fields of its Config."""
    cls = method_class(name)
    valid = config_fields(cls.Config)
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} for method {name!r}; valid: {sorted(valid)}")
    for f in fields(cls.Config):
        if f.name in cfg and not _type_ok(cfg[f.name], f.default):
            raise TypeError(f"{name}.{f.name} = {cfg[f.name]!r}: expected a value like "
                            f"{f.default!r} ({type(f.default).__name__})")
    return cls(num_classes, cls.Config(**cfg))


def _type_ok(value: object, default: object) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))
