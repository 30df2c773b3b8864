"""permessage-deflate for the Link: the ``compression=`` option and the "lean" setting.

Measured with ``python -m bench.deflate`` on Telegram-like updates (200-2,000 B JSON): a zlib encoder
with a 12-bit window and memLevel 4 compresses them as well as memLevel 5 (0.239 of the raw size),
costs 30 KiB once used instead of 37 KiB (15-bit windows: 125 KiB), and websockets makes both
contexts when the connection opens, so an idle connection carries ~30 KiB of zlib state it may
never touch. "lean" therefore (a) asks for 12-bit windows both ways and memLevel 4 and (b) makes
each context on first use: a link that only exchanges heartbeats costs no zlib memory at all.
"""

from __future__ import annotations

import zlib
from typing import Any, Sequence

from websockets.extensions.base import ClientExtensionFactory, Extension, ExtensionParameter
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, PerMessageDeflate
from websockets.frames import CTRL_OPCODES, Frame

from .._errors import ConfigError

__all__ = ["LEAN_WINDOW_BITS", "LEAN_MEM_LEVEL", "LazyPerMessageDeflate", "LeanDeflateFactory", "websockets_options"]

LEAN_WINDOW_BITS = 12
LEAN_MEM_LEVEL = 4

COMPRESSION_CHOICES = '"lean" (default), "websockets", None, or a list of websockets ClientExtensionFactory objects'


class LazyPerMessageDeflate(PerMessageDeflate):
    """websockets' PerMessageDeflate whose zlib contexts are made on first use instead of at handshake."""

    def __init__(
        self,
        remote_no_context_takeover: bool,
        local_no_context_takeover: bool,
        remote_max_window_bits: int,
        local_max_window_bits: int,
        compress_settings: dict[Any, Any] | None = None,
    ) -> None:
        # Built as "no context takeover" so the parent makes no contexts, then told the truth.
        super().__init__(True, True, remote_max_window_bits, local_max_window_bits, compress_settings)
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_no_context_takeover = local_no_context_takeover

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        if frame.rsv1 and "decoder" not in self.__dict__ and not self.remote_no_context_takeover:
            self.decoder = zlib.decompressobj(wbits=-self.remote_max_window_bits)
        return super().decode(frame, max_size=max_size)

    def encode(self, frame: Frame) -> Frame:
        if "encoder" not in self.__dict__ and frame.opcode not in CTRL_OPCODES and not self.local_no_context_takeover:
            self.encoder = zlib.compressobj(wbits=-self.local_max_window_bits, **self.compress_settings)
        return super().encode(frame)


class LeanDeflateFactory(ClientPerMessageDeflateFactory):
    """Offers permessage-deflate like websockets does, but the accepted extension makes contexts lazily."""

    def process_response_params(
        self, params: Sequence[ExtensionParameter], accepted_extensions: Sequence[Extension]
    ) -> PerMessageDeflate:
        ext = super().process_response_params(params, accepted_extensions)
        # The parent built eager contexts for ext; they are dropped here, before the connection holds them.
        return LazyPerMessageDeflate(
            ext.remote_no_context_takeover,
            ext.local_no_context_takeover,
            ext.remote_max_window_bits,
            ext.local_max_window_bits,
            ext.compress_settings,
        )


def _lean_extensions() -> list[ClientExtensionFactory]:
    """The "lean" offer: 12-bit windows both ways, memLevel 4, lazy contexts.

    A second offer without ``server_max_window_bits`` follows, so a server that ignores that
    parameter (instead of declining the offer, as RFC 7692 says) still gets compression instead of a
    failed handshake; our decoder then just needs the server's window once messages arrive.
    """
    settings = {"memLevel": LEAN_MEM_LEVEL}
    return [
        LeanDeflateFactory(
            server_max_window_bits=LEAN_WINDOW_BITS, client_max_window_bits=LEAN_WINDOW_BITS, compress_settings=settings
        ),
        LeanDeflateFactory(client_max_window_bits=LEAN_WINDOW_BITS, compress_settings=dict(settings)),
    ]


#: Factories hold only their settings, so every lean link shares these two.
_LEAN = _lean_extensions()


def check_compression(compression: object) -> object:
    """Validate the ``compression=`` option; returns it (a list copy for a sequence of factories)."""
    if compression is None or compression in ("lean", "websockets", "default"):
        return compression
    if isinstance(compression, (list, tuple)) and compression and all(
        isinstance(f, ClientExtensionFactory) for f in compression
    ):
        return list(compression)
    if isinstance(compression, str):
        raise ConfigError(f"compression must be {COMPRESSION_CHOICES}; got {compression!r}")
    raise ConfigError(f"compression must be {COMPRESSION_CHOICES}; got {type(compression).__name__} {compression!r}")


_OPTIONS: dict[object, dict[str, Any]] = {  # shared, read-only: one dict per link would cost memory
    "lean": {"compression": None, "extensions": _LEAN},
    "websockets": {"compression": "deflate"},
    "default": {"compression": "deflate"},
    None: {"compression": None},
}


def websockets_options(compression: object) -> dict[str, Any]:
    """The keyword arguments of ``websockets.connect`` for a validated ``compression=`` value (do not mutate)."""
    if compression is None or isinstance(compression, str):
        return _OPTIONS[compression]
    return {"compression": None, "extensions": list(compression)}  # type: ignore[call-overload]
