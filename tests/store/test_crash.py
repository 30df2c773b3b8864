"""kill -9 in the middle of a burst loses no returned put and delivers nothing twice under a key."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

from tether.store import Outbox

N = 10_000
SESSIONS = 4

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from tether.store import Outbox

    N, SESSIONS = int(sys.argv[2]), int(sys.argv[3])

    def say(line):
        sys.stdout.write(line)
        sys.stdout.flush()

    async def main():
        box = Outbox(sys.argv[1])
        async def producer(p):
            for i in range(p, N, 32):
                mid = await box.put(f"s{i % SESSIONS}", str(i), key=f"k{i}")
                say(f"P {i} {mid}\\n")
        async def consumer(s):
            while True:
                got = await box.lease(s, 50)
                if not got:
                    await asyncio.sleep(0.001)
                    continue
                await box.ack([m.id for m in got])
                say("".join(f"A {m.id} {m.payload}\\n" for m in got))
        consumers = [asyncio.ensure_future(consumer(f"s{s}")) for s in range(SESSIONS)]
        await asyncio.gather(*(producer(p) for p in range(32)))
        say("DONE\\n")
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def _burst_and_kill(path: str, kill_after: int) -> tuple[dict[int, str], dict[str, str], bool]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, path, str(N), str(SESSIONS)],
                            stdout=subprocess.PIPE, text=True)
    puts: dict[int, str] = {}
    acks: dict[str, str] = {}
    finished = False
    killed = False
    deadline = time.monotonic() + 40
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            parts = line.split()
            if line.endswith("\n") and len(parts) == 3 and parts[0] == "P":
                puts[int(parts[1])] = parts[2]
            elif line.endswith("\n") and len(parts) == 3 and parts[0] == "A":
                acks[parts[1]] = parts[2]
            elif parts == ["DONE"]:
                finished = True
            if not killed and (len(puts) >= kill_after and len(acks) >= 50 or time.monotonic() > deadline):
                os.kill(proc.pid, signal.SIGKILL)  # then read what it flushed before dying
                killed = True
    finally:
        if not killed:
            proc.kill()
        proc.wait(10)
    return puts, acks, finished


async def test_sigkill_mid_burst_loses_nothing_and_keys_deliver_once(tmp_path):
    """Every put whose call returned survives kill -9; re-putting every key and draining delivers each once."""
    path = str(tmp_path / "crash.db")
    puts, acks, finished = _burst_and_kill(path, kill_after=N // 3)
    assert not finished, "the child finished the burst before the kill; the test proves nothing"
    assert len(puts) >= N // 3 and acks

    box = Outbox(path, synchronous="FULL")
    try:
        # 1. Every returned put is present (pending, leased or delivered) with its payload.
        stored = {}
        for s in range(SESSIONS):
            for m in await box.messages(f"s{s}", limit=N):
                stored[m.id] = m
        missing = [i for i, mid in puts.items() if mid not in stored]
        assert not missing, f"{len(missing)} returned puts lost, e.g. {missing[:5]}"
        assert all(stored[mid].payload == str(i) for i, mid in puts.items())
        # 2. Every returned ack is durable.
        assert all(stored[mid].status == "delivered" for mid in acks)

        # 3. The restarted producer re-puts the whole burst under the same keys: same ids, no copies.
        again = await asyncio.gather(*(box.put(f"s{i % SESSIONS}", str(i), key=f"k{i}") for i in range(N)))
        assert all(again[i] == mid for i, mid in puts.items())
        assert len(set(again)) == N

        # 4. The restarted process takes back the dead one's leases, then drains: nothing acked before the crash comes out again; each key is delivered once.
        await box.release_leases()
        delivered_now: list[str] = []
        for s in range(SESSIONS):
            while got := await box.lease(f"s{s}", 500):
                await box.ack([m.id for m in got])
                delivered_now += [m.id for m in got]
        assert not set(delivered_now) & set(acks)
        assert len(delivered_now) == len(set(delivered_now))
        final = {}
        for s in range(SESSIONS):
            for m in await box.messages(f"s{s}", limit=2 * N):
                final.setdefault(m.key, []).append(m)
        assert len(final) == N
        assert all(len(ms) == 1 and ms[0].status == "delivered" for ms in final.values())
        assert await box.depth() == 0
    finally:
        await box.close()


INBOX_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from tether.store import Cursor, Inbox

    async def main():
        inbox = Inbox(sys.argv[1])
        async def upstream(s):
            for i in range(100_000):
                await inbox.mark(f"s{s}", str(i), cursor=Cursor(offset=i + 1))
                sys.stdout.write(f"M {s} {i}\\n")
                sys.stdout.flush()
        await asyncio.gather(*(upstream(s) for s in range(4)))

    asyncio.run(main())
    """
)


async def test_sigkill_keeps_marks_and_cursors_consistent(tmp_path):
    """After kill -9 during marks, each session's cursor matches exactly its last stored mark."""
    path = str(tmp_path / "inbox.db")
    proc = subprocess.Popen([sys.executable, "-c", INBOX_CHILD, path], stdout=subprocess.PIPE, text=True)
    marked: dict[int, int] = {}
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    try:
        for line in proc.stdout:
            parts = line.split()
            if line.endswith("\n") and len(parts) == 3:
                marked[int(parts[1])] = int(parts[2])
            if sum(marked.values()) >= 2000 or time.monotonic() > deadline:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(10)
    assert len(marked) == 4

    from tether.store import Inbox

    inbox = Inbox(path)
    try:
        for s, last_printed in marked.items():
            cursor = await inbox.cursors.get(f"s{s}")
            assert cursor is not None and cursor.offset is not None
            last_stored = cursor.offset - 1
            assert last_stored >= last_printed  # every returned mark is durable
            assert await inbox.seen(f"s{s}", str(last_stored))  # the cursor never runs ahead of a mark
            assert not await inbox.seen(f"s{s}", str(last_stored + 1))  # nor a mark ahead of the cursor
            assert all([await inbox.seen(f"s{s}", str(i)) for i in range(0, last_stored + 1, 97)])
    finally:
        await inbox.close()
