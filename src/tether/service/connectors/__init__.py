"""Built-in connectors. Importing a module registers its kind (see ``register_connector``)."""

from __future__ import annotations

import importlib
import logging

__all__ = ["BUILTIN", "load_builtin"]

BUILTIN = ("websocket", "telegram")


def load_builtin() -> None:
    """Import every built-in connector module that is present (each registers its kind)."""
    for name in BUILTIN:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            logging.getLogger("tether.service").debug("connector module %s not installed", name)
