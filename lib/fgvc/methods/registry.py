"""One registry maps method names to classes: `create_method`, `list_methods`.

A method is one file, and nothing else: ``lib/fgvc/methods/<name>.py`` holding a class
decorated with :func:`register` (its ``name`` is the method's name), with its variants (the
papers' ablation rows) in ``configs/variants/<name>.yaml``. Every public module of this folder
except base and registry is imported on first use (:func:`method_modules`), so a new file is
found by itself: by the grid, the config validation, the contract tests, the tables.

Display order: each class registers with an ``order`` (``@register(order=30)``; without one it
comes after the ordered ones); :func:`list_methods` returns the names by (order, name), and
every table, figure and notebook shows methods in that order (no other list of names exists).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import fields
from pathlib import Path

from fgvc.methods.base import Method, config_fields

_METHODS: dict[str, type[Method]] = {}
_ORDER: dict[str, int] = {}
UNORDERED = 1000  # the display order of a method registered without one: after the others
# Modules of this package that are not methods; every other public module is one method
# file that registers its class(es) on import.
_NOT_METHODS = {"base", "registry"}
_loaded = False


def register(cls: type[Method] | None = None, *, order: int = UNORDERED):
    """Class decorator: make method `cls` known under ``cls.name`` (one name, one class).

    ``@register`` or ``@register(order=N)``: N places the method in :func:`list_methods` (and
    so in every table and figure); ties are broken by name."""
    if cls is None:
        return lambda c: register(c, order=order)
    if not cls.name:
        raise ValueError(f"{cls.__module__}.{cls.__qualname__} has no `name`")
    old = _METHODS.get(cls.name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"method name {cls.name!r} of {cls.__module__}.{cls.__qualname__} is "
                         f"taken by {old.__module__}.{old.__qualname__}")
    _METHODS[cls.name] = cls
    _ORDER[cls.name] = int(order)
    return cls


def method_modules() -> list[str]:
    """Names of the method modules of this package: every module in its folder except
    base, registry and private (``_``-prefixed) ones, sorted."""
    folder = str(Path(__file__).resolve().parent)
    return sorted(m.name for m in pkgutil.iter_modules([folder])
                  if not m.ispkg and m.name not in _NOT_METHODS and not m.name.startswith("_"))


def _load_all() -> None:
    """Import every method module once; a module that fails to import is an error with its cause."""
    global _loaded
    if _loaded:
        return
    for mod in method_modules():
        name = f"{__package__}.{mod}"
        try:
            importlib.import_module(name)
        except Exception as e:
            raise ImportError(f"method module {name} failed to import: "
                              f"{type(e).__name__}: {e}", name=name) from e
    _loaded = True


def list_methods() -> list[str]:
    """Every registered method's name in display order: by its registered ``order``, then name."""
    _load_all()
    return sorted(_METHODS, key=lambda m: (_ORDER[m], m))


def method_rank(name: str) -> tuple[int, int, str]:
    """Sort key of a method name in display order; a name not registered (an old record)
    comes after every registered one."""
    names = list_methods()
    return (0, names.index(name), name) if name in names else (1, 0, name)


def method_class(name: str) -> type[Method]:
    _load_all()
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {list_methods()}")
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
