"""Outbox: durable put+ack throughput of tether's group-commit Outbox vs a naive SQLite loop.

Both sides use the same file system, WAL mode and ``synchronous`` setting, in the same run:

* tether: N producer asyncio tasks (1000 and 100 by default) each ``await outbox.put()`` (a put returns only once
  committed), while one consumer per session leases up to 500 and acks them in one call.
  Throughput = messages put AND acked per second, end to end.
* naive: the usual code: one ``INSERT`` + ``COMMIT`` per message, then one ``UPDATE`` (ack) +
  ``COMMIT`` per message, so each message is durable before the next, like an awaited put.
  A put-only row (one commit per message, no ack) is the "one commit per message" ceiling.

``python -m bench.outbox [--n 50000]`` prints the figures; ``run()`` returns them as a dict that
``python -m bench`` turns into a BENCHMARKS.md table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import tempfile
import time
from typing import Any

PAYLOAD = "x" * 100
SESSIONS = 10


async def _tether(path: str, n: int, synchronous: str, producers: int) -> dict[str, Any]:
    from tether.store import Outbox

    box = Outbox(path, synchronous=synchronous, sweep_interval=None)
    await box.open()
    acked = 0
    done = asyncio.Event()

    async def producer(p: int) -> None:
        for i in range(p, n, producers):
            await box.put(f"s{i % SESSIONS}", PAYLOAD)

    async def consumer(session: str) -> None:
        nonlocal acked
        while not done.is_set():
            got = await box.lease(session, 500)
            if not got:
                await asyncio.sleep(0.002)
                continue
            await box.ack([m.id for m in got])
            acked += len(got)
            if acked >= n:
                done.set()

    t0 = time.perf_counter()
    c0 = time.process_time()
    consumers = [asyncio.ensure_future(consumer(f"s{s}")) for s in range(SESSIONS)]
    await asyncio.gather(*(producer(p) for p in range(producers)))
    t_put = time.perf_counter() - t0
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0  # both threads: the event loop and the writer
    for c in consumers:
        c.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    batches, ops = box._db.batches, box._db.ops
    depth = await box.depth()
    await box.close()
    assert depth == 0, f"{depth} messages left undelivered"
    return {"msg/s": n / elapsed, "put/s": n / t_put, "messages": n, "seconds": elapsed,
            "ops per commit": ops / max(1, batches), "cpu us/msg": cpu / n * 1e6}


def _naive(path: str, n: int, synchronous: str, *, ack: bool = True) -> dict[str, Any]:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={synchronous}")
    con.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL, "
                "payload BLOB NOT NULL, status TEXT NOT NULL, created_at REAL, delivered_at REAL)")
    t0 = time.perf_counter()
    c0 = time.process_time()
    for i in range(n):
        con.execute("BEGIN")
        cur = con.execute("INSERT INTO outbox(session, payload, status, created_at) VALUES (?, ?, 'pending', ?)",
                          (f"s{i % SESSIONS}", PAYLOAD, time.time()))
        con.execute("COMMIT")
        if not ack:
            continue
        con.execute("BEGIN")
        con.execute("UPDATE outbox SET status = 'delivered', delivered_at = ? WHERE seq = ?",
                    (time.time(), cur.lastrowid))
        con.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    con.close()
    return {"msg/s": n / elapsed, "messages": n, "seconds": elapsed, "ops per commit": 1.0,
            "cpu us/msg": cpu / n * 1e6}


def run(n: int = 50_000, *, naive_n: int | None = None, producers: tuple[int, ...] = (1000, 100),
        synchronous: tuple[str, ...] = ("FULL", "NORMAL"), directory: str | None = None) -> dict[str, Any]:
    """Measure both systems at each ``synchronous`` setting; return rows for BENCHMARKS.md.

    Args:
        n: messages put and acked through tether's Outbox per setting and producer count.
        naive_n: messages for the naive loop (default ``min(n, 5000)``: it is ~10x slower).
        producers: concurrent producer counts to measure (the first is the headline figure: a
            gateway with many active sessions; fewer producers means smaller commits).
        synchronous: the settings to measure (both sides use the same one).
        directory: where the database files go (default: a temp dir; must be a real disk, not tmpfs,
            or fsync costs nothing and the figures mean nothing).
    """
    if isinstance(producers, int):
        producers = (producers,)
    naive_n = naive_n or min(n, 5000)
    tmp = tempfile.mkdtemp(prefix="tether-bench-outbox-", dir=directory)
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    try:
        for sync in synchronous:
            group = f"synchronous={sync}"
            runs = {}
            for k, p in enumerate(producers):
                t = asyncio.run(_tether(os.path.join(tmp, f"tether-{sync}-{p}.db"), n, sync, p))
                runs[p] = t
                rows.append({"system": f"tether Outbox (group commit, {p} producers)", "group": group,
                             "baseline": k == 0,
                             "figures": {"msg/s": round(t["msg/s"]), "put/s": round(t["put/s"]),
                                         "messages": n, "ops per commit": round(t["ops per commit"], 1),
                                         "CPU µs/msg": round(t["cpu us/msg"], 1)}})
            b = _naive(os.path.join(tmp, f"naive-{sync}.db"), naive_n, sync)
            bp = _naive(os.path.join(tmp, f"naive-put-{sync}.db"), naive_n, sync, ack=False)
            head = runs[producers[0]]
            result[sync] = {"tether": head, "tether_by_producers": runs, "naive": b, "naive_put_only": bp,
                            "speedup": head["msg/s"] / b["msg/s"]}
            rows.append({"system": "naive sqlite3 (commit per put and per ack)", "group": group,
                         "figures": {"msg/s": round(b["msg/s"]), "put/s": "",
                                     "messages": naive_n, "ops per commit": 1,
                                     "CPU µs/msg": round(b["cpu us/msg"], 1)}})
            rows.append({"system": "naive sqlite3, put only (one commit per message, no ack)", "group": group,
                         "figures": {"msg/s": "", "put/s": round(bp["msg/s"]),
                                     "messages": naive_n, "ops per commit": 1,
                                     "CPU µs/msg": round(bp["cpu us/msg"], 1)}})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.update({
        "title": "Outbox: durable put+ack throughput (SQLite WAL)",
        "primary": "msg/s",
        "lower_is_better": False,
        "rows": rows,
        "notes": [
            f"tether: N producer tasks each awaiting put() (returns after COMMIT), {SESSIONS} sessions, "
            "one consumer per session leasing up to 500 and acking them in one call; msg/s = put AND acked.",
            "naive: INSERT+COMMIT then UPDATE+COMMIT per message, same WAL mode and synchronous setting, in a "
            "plain synchronous loop (no asyncio, no thread hop: its best case; in an asyncio gateway every "
            "commit would block the event loop).",
            "FULL survives power loss; NORMAL (WAL) survives a process crash but may lose the last commits "
            "on power loss. CPU µs/msg counts both threads (event loop + writer) and is less sensitive "
            "to other load on the machine than msg/s.",
        ],
    })
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--naive-n", type=int, default=None)
    ap.add_argument("--producers", default="1000,100", help="comma-separated producer counts")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    res = run(args.n, naive_n=args.naive_n, directory=args.dir,
              producers=tuple(int(p) for p in args.producers.split(",")))
    print(res["title"])
    for sync in ("FULL", "NORMAL"):
        if sync not in res:
            continue
        b = res[sync]["naive"]
        for p, t in res[sync]["tether_by_producers"].items():
            print(f"  synchronous={sync:<6} tether ({p:>4} producers) {t['msg/s']:>9,.0f} msg/s "
                  f"(put {t['put/s']:>9,.0f}/s, {t['ops per commit']:.0f} ops/commit, "
                  f"{t['cpu us/msg']:.1f} CPU µs/msg)")
        print(f"  synchronous={sync:<6} naive one commit per put and per ack {b['msg/s']:>9,.0f} msg/s "
              f"({b['cpu us/msg']:.1f} CPU µs/msg)   tether/naive x{res[sync]['speedup']:.1f}")
        bp = res[sync]["naive_put_only"]
        print(f"  synchronous={sync:<6} naive put only, one commit per message {bp['msg/s']:>7,.0f} put/s")

if __name__ == "__main__":
    main()
