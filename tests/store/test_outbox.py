"""Outbox semantics: durability contract, idempotency, order, leases, attempts, ttl, size limit."""

from __future__ import annotations

import asyncio

import pytest

import tether
from tether.store import DeadLetter, Outbox, OutboxMessage, OutboxStore


async def test_put_returns_id_and_lease_returns_payload_unchanged(outbox):
    """put() returns a str id; lease() gives back str as str and bytes as bytes."""
    a = await outbox.put("s", "text")
    b = await outbox.put("s", b"\x00bin")
    assert isinstance(a, str) and a != b
    got = await outbox.lease("s", 10)
    assert [(m.id, m.payload, m.status) for m in got] == [(a, "text", "leased"), (b, b"\x00bin", "leased")]
    assert all(isinstance(m, OutboxMessage) for m in got)


async def test_outbox_implements_protocol(outbox):
    """The SQLite Outbox satisfies the OutboxStore Protocol."""
    assert isinstance(outbox, OutboxStore)
    assert tether.Outbox is Outbox


async def test_put_survives_reopen(tmp_path, clock):
    """A returned put() is on disk: a new Outbox on the same file sees it."""
    box = Outbox(tmp_path / "o.db", clock=clock)
    ids = await asyncio.gather(*(box.put("s", f"m{i}") for i in range(50)))
    await box.close()
    box = Outbox(tmp_path / "o.db", clock=clock)
    try:
        got = await box.messages("s", limit=1000)
        assert [m.id for m in got] == ids
        assert [m.payload for m in got] == [f"m{i}" for i in range(50)]
    finally:
        await box.close()


async def test_idempotency_key_returns_same_id_and_stores_once(outbox):
    """Same (session, key) -> same id, one stored message, first payload wins."""
    a = await outbox.put("s", "first", key="k1")
    b = await outbox.put("s", "second", key="k1")
    assert a == b
    assert await outbox.depth("s") == 1
    assert (await outbox.lease("s", 5))[0].payload == "first"


async def test_idempotency_key_is_per_session(outbox):
    """The same key in another session is another message."""
    a = await outbox.put("s1", "x", key="k")
    b = await outbox.put("s2", "x", key="k")
    assert a != b


async def test_idempotency_key_holds_after_delivery(outbox):
    """A put repeated after the message was acked does not deliver it again."""
    a = await outbox.put("s", "x", key="k")
    await outbox.ack([m.id for m in await outbox.lease("s", 1)])
    assert await outbox.put("s", "x", key="k") == a
    assert await outbox.lease("s", 5) == []


async def test_concurrent_puts_with_same_key_dedupe(outbox):
    """Concurrent puts with one key in one batch still store one message."""
    ids = await asyncio.gather(*(outbox.put("s", f"p{i}", key="same") for i in range(20)))
    assert len(set(ids)) == 1
    assert await outbox.depth() == 1


async def test_lease_is_in_put_order_and_not_leased_twice(outbox):
    """Leases come out in put order; a leased message is not handed out again while leased."""
    ids = [await outbox.put("s", str(i)) for i in range(5)]
    first = await outbox.lease("s", 3)
    assert [m.id for m in first] == ids[:3]
    assert await outbox.lease("s", 3) == []  # strict head-of-line: the head is leased
    await outbox.ack([m.id for m in first])
    assert [m.id for m in await outbox.lease("s", 10)] == ids[3:]


async def test_unordered_mode_skips_leased_messages(tmp_path, clock):
    """With ordered=False, later messages are leased while earlier ones are out."""
    box = Outbox(tmp_path / "o.db", clock=clock, ordered=False)
    try:
        ids = [await box.put("s", str(i)) for i in range(4)]
        assert [m.id for m in await box.lease("s", 2)] == ids[:2]
        assert [m.id for m in await box.lease("s", 5)] == ids[2:]
    finally:
        await box.close()


async def test_sessions_are_independent(outbox):
    """A leased head in one session does not block another session."""
    await outbox.put("a", "a1")
    await outbox.put("b", "b1")
    assert [m.payload for m in await outbox.lease("a", 1)] == ["a1"]
    assert [m.payload for m in await outbox.lease("b", 1)] == ["b1"]


async def test_lease_expiry_hands_message_out_again(outbox, clock):
    """A lease that runs out without ack is re-leased, counted as one failed attempt."""
    mid = await outbox.put("s", "x")
    await outbox.lease("s", 1, lease_for=10)
    await clock.advance(9)
    assert await outbox.lease("s", 1) == []
    await clock.advance(2)
    again = await outbox.lease("s", 1)
    assert [(m.id, m.attempts) for m in again] == [(mid, 1)]


async def test_nack_delay_keeps_head_of_line(outbox, clock):
    """A nacked head with a delay blocks its session until the delay passes, then comes first."""
    ids = [await outbox.put("s", str(i)) for i in range(3)]
    leased = await outbox.lease("s", 3)
    await outbox.nack([leased[0].id], delay=5, reason="429")
    assert await outbox.lease("s", 3) == []  # neither the head nor the followers overtake
    await clock.advance(5)
    again = await outbox.lease("s", 3)
    assert [m.id for m in again] == ids
    assert [m.attempts for m in again] == [1, 0, 0]  # followers given back without an attempt
    assert again[0].last_error == "429"


async def test_nack_past_max_attempts_goes_to_dead_letters(tmp_path, clock):
    """After max_attempts nacks the message is a dead letter with the reason; the next one moves up."""
    box = Outbox(tmp_path / "o.db", clock=clock, max_attempts=3)
    try:
        bad = await box.put("s", "bad")
        good = await box.put("s", "good")
        for _ in range(3):
            (m,) = await box.lease("s", 1)
            assert m.id == bad
            await box.nack([m.id], reason="HTTP 400")
        (dead,) = await box.dead_letters()
        assert isinstance(dead, DeadLetter)
        assert (dead.id, dead.payload, dead.attempts) == (bad, "bad", 3)
        assert "gave up after 3 attempts" in dead.reason and "HTTP 400" in dead.reason
        assert [m.id for m in await box.lease("s", 5)] == [good]
        assert [(m.id, m.status) for m in await box.messages("s", status="dead")] == [(bad, "dead")]
        assert (await box.dead_count(), await box.dead_count("s"), await box.dead_count("x")) == (1, 1, 0)
    finally:
        await box.close()


async def test_expired_leases_count_towards_max_attempts(tmp_path, clock):
    """A consumer that keeps crashing (lease expiry) also ends in the dead letters."""
    box = Outbox(tmp_path / "o.db", clock=clock, max_attempts=2)
    try:
        await box.put("s", "x")
        await box.lease("s", 1, lease_for=1)
        await clock.advance(2)
        await box.lease("s", 1, lease_for=1)
        await clock.advance(2)
        assert await box.lease("s", 1) == []
        (dead,) = await box.dead_letters("s")
        assert "lease expired" in dead.reason and dead.attempts == 2
    finally:
        await box.close()


async def test_ttl_expiry_moves_to_dead_letters_on_lease(outbox, clock):
    """An expired message is never delivered and never silently deleted: reason 'expired'."""
    old = await outbox.put("s", "stale", ttl=10)
    fresh = await outbox.put("s", "fresh")
    await clock.advance(11)
    assert [m.id for m in await outbox.lease("s", 5)] == [fresh]
    (dead,) = await outbox.dead_letters()
    assert (dead.id, dead.reason, dead.payload) == (old, "expired", "stale")


async def test_sweep_expires_without_a_lease(outbox, clock):
    """sweep() dead-letters expired messages of every session."""
    await outbox.put("a", "x", ttl=1)
    await outbox.put("b", "y", ttl=1)
    await outbox.put("b", "z", ttl=100)
    await clock.advance(2)
    assert await outbox.sweep() == 2
    assert await outbox.depth() == 1
    assert sorted(d.payload for d in await outbox.dead_letters()) == ["x", "y"]


async def test_automatic_sweep_runs_on_the_clock(tmp_path, clock):
    """With sweep_interval set, a later put triggers the sweep."""
    box = Outbox(tmp_path / "o.db", clock=clock, sweep_interval=5)
    try:
        await box.put("a", "x", ttl=1)
        await clock.advance(6)
        await box.put("b", "y")
        await box.depth()  # the sweep was queued before this read
        assert [d.reason for d in await box.dead_letters()] == ["expired"]
    finally:
        await box.close()


async def test_outbox_full_raises_with_clear_message(tmp_path, clock):
    """At max_messages, put() raises OutboxFull naming the limit and the ways out."""
    box = Outbox(tmp_path / "o.db", clock=clock, max_messages=2)
    try:
        await box.put("s", "1")
        await box.put("s", "2")
        with pytest.raises(tether.OutboxFull, match="max_messages=2.*on_full"):
            await box.put("s", "3")
        await box.ack([m.id for m in await box.lease("s", 1)])
        await box.put("s", "3")  # room again once one is delivered
        assert await box.depth() == 2
    finally:
        await box.close()


async def test_outbox_full_in_a_batch_fails_only_that_put(tmp_path, clock):
    """Concurrent puts past the limit: exactly the overflowing ones fail, the rest are stored."""
    box = Outbox(tmp_path / "o.db", clock=clock, max_messages=5)
    try:
        res = await asyncio.gather(*(box.put("s", str(i)) for i in range(8)), return_exceptions=True)
        assert [isinstance(r, tether.OutboxFull) for r in res] == [False] * 5 + [True] * 3
        assert await box.depth() == 5
    finally:
        await box.close()


async def test_drop_oldest_records_the_dropped_message(tmp_path, clock):
    """on_full='drop_oldest' dead-letters the oldest pending message with a reason."""
    box = Outbox(tmp_path / "o.db", clock=clock, max_messages=2, on_full="drop_oldest")
    try:
        first = await box.put("s", "1")
        await box.put("s", "2")
        await box.put("s", "3")
        assert [m.payload for m in await box.lease("s", 5)] == ["2", "3"]
        (dead,) = await box.dead_letters()
        assert dead.id == first and dead.reason.startswith("dropped: outbox full")
    finally:
        await box.close()


async def test_reject_new_records_the_rejected_message(tmp_path, clock):
    """on_full='reject_new' stores the new message straight in the dead letters."""
    box = Outbox(tmp_path / "o.db", clock=clock, max_messages=1, on_full="reject_new")
    try:
        await box.put("s", "1")
        rejected = await box.put("s", "2")
        assert [m.payload for m in await box.lease("s", 5)] == ["1"]
        (dead,) = await box.dead_letters()
        assert (dead.id, dead.payload) == (rejected, "2")
        assert dead.reason.startswith("rejected: outbox full")
    finally:
        await box.close()


async def test_ack_is_idempotent_and_ignores_unknown_ids(outbox):
    """Acking twice, or acking ids that do not exist, changes nothing."""
    mid = await outbox.put("s", "x")
    await outbox.ack([mid])
    await outbox.ack([mid, "999999", "not-ours"])
    assert await outbox.depth() == 0
    assert [m.status for m in await outbox.messages("s")] == ["delivered"]


async def test_messages_filters_by_status(outbox):
    """messages() shows pending, leased, delivered and dead, filterable by status."""
    ids = [await outbox.put("s", str(i)) for i in range(3)]
    await outbox.ack([ids[0]])
    await outbox.lease("s", 1)
    statuses = {m.id: m.status for m in await outbox.messages("s")}
    assert statuses == {ids[0]: "delivered", ids[1]: "leased", ids[2]: "pending"}
    assert [m.id for m in await outbox.messages("s", status="pending")] == [ids[2]]
    assert [m.id for m in await outbox.messages("s", limit=1)] == [ids[0]]


async def test_retention_forgets_delivered_messages(tmp_path, clock):
    """Delivered messages and their keys are forgotten after retention, by sweep()."""
    box = Outbox(tmp_path / "o.db", clock=clock, retention=10)
    try:
        a = await box.put("s", "x", key="k")
        await box.ack([a])
        await clock.advance(11)
        await box.sweep()
        assert await box.messages("s") == []
        assert await box.put("s", "x", key="k") != a
    finally:
        await box.close()


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda b: b.put("s", {"a": 1}), TypeError, "payload must be str or bytes"),
        (lambda b: b.put("s", 5), TypeError, "payload must be str or bytes"),
        (lambda b: b.put("", "x"), tether.ConfigError, "session"),
        (lambda b: b.put(3, "x"), TypeError, "session must be a str"),
        (lambda b: b.put("s", "x", key=1), TypeError, "key must be a str"),
        (lambda b: b.put("s", "x", ttl=-1), tether.ConfigError, "ttl"),
        (lambda b: b.lease("s", 0), tether.ConfigError, "n must be"),
        (lambda b: b.lease("s", 1, lease_for=0), tether.ConfigError, "lease_for"),
        (lambda b: b.ack("123"), TypeError, "iterable of ids"),
        (lambda b: b.ack([1]), TypeError, "each id must be a str"),
        (lambda b: b.nack(["1"], delay=-1), tether.ConfigError, "delay"),
        (lambda b: b.messages("s", status="sent"), tether.ConfigError, "status must be one of"),
    ],
)
async def test_bad_arguments_raise_typed_errors(outbox, call, exc, match):
    """Bad arguments fail before anything is queued, with a message that says what to fix."""
    with pytest.raises(exc, match=match) as info:
        await call(outbox)
    assert isinstance(info.value, tether.TetherError)  # wrong types: StoreTypeError, also a TypeError
    assert await outbox.depth() == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"synchronous": "OFF"}, "synchronous must be"),
        ({"on_full": "block"}, "on_full must be one of"),
        ({"max_messages": 0}, "max_messages"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"batch_max": 0}, "batch_max"),
    ],
)
def test_bad_options_raise_config_error(tmp_path, kwargs, match):
    """Invalid constructor options raise ConfigError naming the option."""
    with pytest.raises(tether.ConfigError, match=match):
        Outbox(tmp_path / "o.db", **kwargs)


async def test_closed_outbox_refuses_calls(tmp_path):
    """After close(), calls raise StoreError; close() is idempotent."""
    box = Outbox(tmp_path / "o.db")
    await box.put("s", "x")
    await box.close()
    await box.close()
    with pytest.raises(tether.StoreError, match="closed"):
        await box.put("s", "y")


async def test_normal_synchronous_works_and_is_shared_per_file(tmp_path):
    """synchronous='NORMAL' is accepted; a second store on the file must use the same setting."""
    box = Outbox(tmp_path / "o.db", synchronous="normal")
    try:
        assert box.synchronous == "NORMAL"
        with pytest.raises(tether.ConfigError, match="synchronous"):
            Outbox(tmp_path / "o.db", synchronous="FULL")
        await box.put("s", "x")
    finally:
        await box.close()


async def test_event_loop_runs_while_the_writer_waits_on_a_lock(tmp_path):
    """A put stuck behind another process's lock does not block the event loop, and lands after."""
    import sqlite3

    path = tmp_path / "o.db"
    box = Outbox(path, busy_timeout=10)
    await box.open()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    put = asyncio.ensure_future(box.put("s", "x"))
    ticks = 0
    try:
        for _ in range(20):  # ~0.1 s of loop activity while the writer thread is blocked in SQLite
            await asyncio.sleep(0.005)
            ticks += 1
        assert not put.done()
    finally:
        other.execute("ROLLBACK")
        other.close()
    try:
        mid = await asyncio.wait_for(put, 10)
        assert ticks == 20
        assert [m.id for m in await box.messages("s")] == [mid]
    finally:
        await box.close()


async def test_group_commit_puts_many_ops_in_one_transaction(tmp_path):
    """Concurrent puts share transactions (far fewer commits than puts) and keep call order."""
    box = Outbox(tmp_path / "o.db")
    try:
        ids = await asyncio.gather(*(box.put("s", str(i)) for i in range(2000)))
        assert box._db.batches < 200
        assert [m.payload for m in await box.messages("s", limit=5000)] == [str(i) for i in range(2000)]
    finally:
        await box.close()


async def test_release_leases_after_restart(tmp_path, clock):
    """release_leases() gives back a dead process's leases at once, without counting attempts."""
    box = Outbox(tmp_path / "o.db", clock=clock)
    ids = [await box.put("s", str(i)) for i in range(3)]
    await box.lease("s", 2, lease_for=300)
    await box.close()
    box = Outbox(tmp_path / "o.db", clock=clock)
    try:
        assert await box.lease("s", 5) == []
        assert await box.release_leases() == 2
        got = await box.lease("s", 5)
        assert [(m.id, m.attempts) for m in got] == [(i, 0) for i in ids]
    finally:
        await box.close()


async def test_requeue_dead_letter_takes_its_place_again(tmp_path, clock):
    """requeue() brings a dead letter back with its id, attempts reset, ahead of later messages."""
    box = Outbox(tmp_path / "o.db", clock=clock, max_attempts=1)
    try:
        bad = await box.put("s", "bad", ttl=5)
        (m,) = await box.lease("s", 1)
        await box.nack([m.id], reason="500")
        later = await box.put("s", "later")
        assert [d.id for d in await box.dead_letters()] == [bad]
        assert await box.requeue([bad, "12345"]) == 1
        assert await box.dead_letters() == []
        got = await box.lease("s", 5)
        assert [(x.id, x.attempts, x.expires_at) for x in got] == [(bad, 0, None), (later, 0, None)]
    finally:
        await box.close()


async def test_expired_message_with_nack_delay_is_swept(outbox, clock):
    """A nacked message waiting out its delay still expires when its ttl passes."""
    await outbox.put("s", "x", ttl=5)
    (m,) = await outbox.lease("s", 1)
    await outbox.nack([m.id], delay=100)
    await clock.advance(6)
    assert await outbox.sweep() == 1
    assert [d.reason for d in await outbox.dead_letters()] == ["expired"]


async def test_running_lease_is_not_expired(outbox, clock):
    """A message out on a running lease is not dead-lettered by ttl; its ack still counts."""
    mid = await outbox.put("s", "x", ttl=5)
    await outbox.lease("s", 1, lease_for=30)
    await clock.advance(6)
    assert await outbox.sweep() == 0
    await outbox.ack([mid])
    assert [m.status for m in await outbox.messages("s")] == ["delivered"]


async def test_subscribe_reports_dead_letters_after_commit(tmp_path, clock):
    """subscribe() callbacks get a DeadLettered event per buried message; unsubscribe stops them."""
    from tether.store import DeadLettered

    box = Outbox(tmp_path / "o.db", clock=clock, max_attempts=1, max_messages=1, on_full="reject_new")
    seen: list[DeadLettered] = []
    unsubscribe = box.subscribe(seen.append)
    box.subscribe(lambda e: 1 / 0)  # a broken observer does not break the store
    try:
        first = await box.put("s", "a")
        rejected = await box.put("s", "b")
        (m,) = await box.lease("s", 1)
        await box.nack([m.id], reason="400")
        await clock.settle()
        assert [(e.letter.id, e.letter.reason.split(":")[0]) for e in seen] == [
            (rejected, "rejected"), (first, "gave up after 1 attempts")]
        unsubscribe()
        await box.put("s", "c", ttl=1)
        await clock.advance(2)
        await box.sweep()
        await clock.settle()
        assert len(seen) == 2
    finally:
        await box.close()
