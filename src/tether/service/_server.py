"""Run the service under uvicorn with tether's own signal handling and log format.

SIGTERM / SIGINT: stop accepting (API answers 503, SSE streams end), let uvicorn finish in-flight
requests, drain in-flight sends (bounded by ``shutdown_timeout``), persist and close every session,
exit 0. A second signal exits at once (code 130): the outbox is on disk, nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from typing import Any, Callable, Iterator

import uvicorn

from .._errors import ConfigError
from ._api import create_app
from ._service import Observability, Service
from ._settings import Settings

__all__ = ["serve", "setup_logging", "bind_socket"]

log = logging.getLogger("tether.service")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
               "session": getattr(record, "session", None), "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class _HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        session = getattr(record, "session", None)
        msg = record.getMessage()
        if session and not msg.startswith(f"[{session}]"):
            line = line.replace(msg, f"[{session}] {msg}", 1)
        return line


class _NotLinkLog(logging.Filter):
    """The service already logs every link event in seed-000 style (``[sess_1] reconnecting in 6.0s
    (attempt 2/10)``); tether.observe's per-link lines go to its log files, not twice to the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "tether.link":
            return False
        # The error tracker's records repeat what the session already logged; they go to errors.log,
        # and only high/critical ones (ERROR and above) also reach the console.
        return record.name != "tether.errors" or record.levelno >= logging.ERROR


def setup_logging(fmt: str = "human", level: str = "info") -> None:
    """Human lines (``12:00:01 INFO [sess_1] connected``) or JSON lines on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_NotLinkLog())
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_HumanFormatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "httpcore", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket first, so a busy port is a clear error before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}. Another program uses that "
                          "port: stop it or pick another with --port (or TETHER_PORT).") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its signal capture: tether decides what a signal means."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: Settings, *, observability: Observability | None = None,
                on_ready: Callable[[Service, str], Any] | None = None, handle_signals: bool = True,
                stop: asyncio.Event | None = None) -> int:
    """Run until a signal (or ``stop`` is set); returns the exit code.

    Raises:
        ConfigError: beyond loopback without a token, or the port is busy.
    """
    from ._config import ConfigManager

    config_manager = ConfigManager(settings)
    settings = config_manager.open()  # the latest stored version (API changes survive restarts), see _config
    try:
        settings.check_can_serve()
        sock = bind_socket(settings.host, settings.port)
    except BaseException:
        await config_manager.close()
        raise
    port = sock.getsockname()[1]
    service = Service(settings, observability=observability, config=config_manager)
    try:
        await service.start()
    except BaseException:
        sock.close()
        await service.close("startup failed")
        raise
    app = create_app(service)
    from ._config_api import config_router

    app.include_router(config_router(service))
    from ._cluster_api import install as install_forwarding  # scale-out: calls reach the session's owner

    install_forwarding(app, service)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=3,
                            ws_ping_interval=20, ws_ping_timeout=20, server_header=False)
    server = _Server(config)
    loop = asyncio.get_running_loop()
    signals = 0

    def begin_shutdown(reason: str) -> None:
        if service.manager is not None:
            service.manager.stop_accepting()
        if service.events is not None:
            service.events.close()  # end SSE streams so uvicorn can finish
        server.should_exit = True
        log.info("shutting down (%s): draining sends for up to %.0fs; signal again to force", reason,
                 settings.shutdown_timeout)

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            begin_shutdown(sig.name)
        else:
            log.warning("second %s: exiting now (queued messages are on disk)", sig.name)
            logging.shutdown()
            os._exit(130)

    installed = []
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass

    async def watch_stop() -> None:
        if stop is not None:
            await stop.wait()
            begin_shutdown("stop requested")

    watcher = asyncio.create_task(watch_stop())
    url = f"http://{'127.0.0.1' if settings.host in ('0.0.0.0', '') else settings.host}:{port}"
    started = time.monotonic()
    try:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            log.info("tether service on %s (API docs %s/docs, %d sessions)", url, url, len(service.manager.list()))
            if on_ready is not None:
                result = on_ready(service, url)
                if asyncio.iscoroutine(result):
                    await result
        await serving
    finally:
        watcher.cancel()
        await service.close()
        for sig in installed:
            loop.remove_signal_handler(sig)
        sock.close()
    log.info("bye (ran %.0fs)", time.monotonic() - started)
    return 0
