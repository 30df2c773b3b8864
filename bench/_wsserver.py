"""A websockets server in its own process, driven over stdin/stdout with JSON lines.

``python -m bench._wsserver --port P [--log FILE]`` prints ``{"ready": true, ...}`` once listening.
Server-side pings are off: only the clients' heartbeats are measured.

Messages it understands from clients:
- ``{"id": "...", ...}`` (JSON with an ``id``): written to ``--log`` (one line, before answering) and
  answered with ``{"type": "ack", "id": "<id>"}`` (tether.JsonAck's defaults): the chaos soak's delivery record, safe across SIGKILL.
- ``"__count__"``: answered with the number of messages this connection received before it.
- ``"__echo__:..."``: echoed back. Anything else is counted and dropped (a sink).

Commands on stdin (each answered with one JSON line):
``stats`` (handshakes, rejected, open, messages, stamps since ``since``), ``close_all`` (code, reason),
``reject`` (status, retry_after, seconds; a path answered with Retry-After that comes back sooner
counts as a ``retry_after_violation``), ``auth`` (valid: bool; when false, handshakes get 401 and
open connections are closed with 4401), ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from ._common import HOST, raise_nofile, reply, stdin_lines


class State:
    def __init__(self, log_path: str | None) -> None:
        self.handshakes: list[float] = []
        self.rejected = 0
        self.messages = 0
        self.conns: set[ServerConnection] = set()
        self.reject_until = 0.0
        self.reject_status = 503
        self.retry_after: float | None = None
        self.auth_valid = True
        self.log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if log_path else None
        self.by_path: dict[str, list[float]] = {}
        # Retry-After bookkeeping: a path told to wait must not come back before not_before[path]
        self.not_before: dict[str, float] = {}
        self.early = 0
        # an idempotent receiver: ids applied before a restart are still known after it
        self.seen: set[str] = set()
        if log_path:
            with open(log_path) as f:
                for line in f:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        self.seen.add(str(json.loads(line)["id"]))


def make_response(status: int, retry_after: float | None) -> Response:
    headers = Headers([("Content-Type", "text/plain")])
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after) if retry_after == int(retry_after) else retry_after)
    phrase = HTTPStatus(status).phrase
    return Response(status, phrase, headers, f"{status} {phrase}\n".encode())


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", default=None)
    ap.add_argument("--backlog", type=int, default=4096)
    ap.add_argument("--no-compression", action="store_true", help="decline permessage-deflate (throughput sink)")
    ap.add_argument("--defer", action="store_true", help="import and wait for a 'listen' command before binding")
    opts = ap.parse_args()
    raise_nofile()
    st = State(opts.log)
    reader = await stdin_lines()
    if opts.defer:
        # a replacement server is started ahead of time, so "down for 0.5 s" means 0.5 s, not 0.5 s
        # plus the interpreter's start-up
        reply({"ready": True, "listening": False, "pid": os.getpid()})
        for _ in range(1000):
            line = await reader.readline()
            if not line or b'"listen"' in line:
                break

    def process_request(connection: ServerConnection, request):  # type: ignore[no-untyped-def]
        now = time.monotonic()
        st.handshakes.append(now)
        st.by_path.setdefault(request.path, []).append(now)
        if now < st.not_before.get(request.path, 0.0) - 0.05:
            st.early += 1
        if now < st.reject_until:
            st.rejected += 1
            if st.retry_after is not None:
                st.not_before[request.path] = now + float(st.retry_after)
            return make_response(st.reject_status, st.retry_after)
        if not st.auth_valid:
            st.rejected += 1
            return make_response(401, None)
        return None

    async def handler(ws: ServerConnection) -> None:
        st.conns.add(ws)
        received = 0
        try:
            async for msg in ws:
                st.messages += 1
                received += 1
                if isinstance(msg, str):
                    if msg.startswith("{"):
                        try:
                            obj = json.loads(msg)
                        except ValueError:
                            continue
                        mid = obj.get("id") if isinstance(obj, dict) else None
                        if mid is not None:
                            mid = str(mid)
                            if st.log_fd is not None:
                                obj["dup"] = mid in st.seen
                                st.seen.add(mid)
                                # written before the ack: a SIGKILL after this line keeps the record
                                os.write(st.log_fd, (json.dumps(obj, separators=(",", ":")) + "\n").encode())
                            await ws.send(json.dumps({"type": "ack", "id": mid}))
                    elif msg == "__count__":
                        await ws.send(str(received - 1))
                    elif msg.startswith("__echo__:"):
                        await ws.send(msg)
        except Exception:
            pass
        finally:
            st.conns.discard(ws)

    async with serve(
        handler,
        HOST,
        opts.port,
        process_request=process_request,
        ping_interval=None,
        backlog=opts.backlog,
        max_size=2**20,
        compression=None if opts.no_compression else "deflate",
    ):
        reply({"ready": True, "listening": True, "pid": os.getpid(), "port": opts.port, "at": time.monotonic()})
        for _ in range(10_000_000):  # bounded command loop; ends on EOF or quit
            line = await reader.readline()
            if not line:
                break
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            name = cmd.get("cmd")
            if name == "stats":
                since = float(cmd.get("since", 0.0))
                stamps = [t for t in st.handshakes if t >= since]
                reply({
                    "handshakes": len(st.handshakes),
                    "rejected": st.rejected,
                    "open": len(st.conns),
                    "messages": st.messages,
                    "retry_after_violations": st.early,
                    "stamps": stamps if cmd.get("stamps") else [],
                    "paths": {p: [t for t in ts if t >= since] for p, ts in st.by_path.items()} if cmd.get("paths") else {},
                })
            elif name == "close_all":
                conns = list(st.conns)
                code = int(cmd.get("code", 1001))
                reason = str(cmd.get("reason", ""))
                if cmd.get("retry_after") is not None:
                    until = time.monotonic() + float(cmd["retry_after"])
                    for c in conns:
                        if c.request is not None:
                            st.not_before[c.request.path] = until
                await asyncio.gather(*(c.close(code, reason) for c in conns), return_exceptions=True)
                reply({"closed": len(conns)})
            elif name == "reject":
                st.reject_status = int(cmd.get("status", 503))
                st.retry_after = cmd.get("retry_after")
                st.reject_until = time.monotonic() + float(cmd.get("seconds", 1.0))
                reply({"ok": True})
            elif name == "auth":
                st.auth_valid = bool(cmd.get("valid", True))
                closed = 0
                if not st.auth_valid:
                    conns = list(st.conns)
                    closed = len(conns)
                    await asyncio.gather(*(c.close(4401, "token expired") for c in conns), return_exceptions=True)
                reply({"ok": True, "closed": closed})
            elif name == "quit":
                reply({"ok": True})
                break
            else:
                reply({"error": f"unknown command {name!r}"})
    if st.log_fd is not None:
        os.close(st.log_fd)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
