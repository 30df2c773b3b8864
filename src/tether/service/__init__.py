"""tether.service: the gateway that keeps many sessions alive behind an HTTP API (``tether serve``).

See docs/service.md. Connectors plug in through :func:`register_connector`.
"""

from ._api import create_app
from ._connector import Connector, ConnectorContext, InboundMessage, register_connector
from ._manager import SessionManager
from ._server import serve
from ._service import Observability, Service
from ._settings import Settings, load_settings
from ._webhooks import sign, verify_signature

__all__ = [
    "Settings",
    "load_settings",
    "Service",
    "Observability",
    "SessionManager",
    "create_app",
    "serve",
    "Connector",
    "ConnectorContext",
    "InboundMessage",
    "register_connector",
    "sign",
    "verify_signature",
]
