"""Packages whose public names are imported on first use (PEP 562).

A package lists ``name -> module`` (absolute, or relative to the package as ``".module"``) and
binds ``__getattr__, __dir__ = lazy_names(__name__, names)``: importing the package then imports
none of those modules, so that the torch-free parts of backsal (the evaluation tables, the
reports, the config settings) load without torch or seaborn.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    package: str, names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` for its lazily imported ``names``.

    A name is imported from its module on first access and then bound in the package, so later
    lookups are plain attribute reads.
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
