"""Outbox extras the service's delivery loop uses: dead-letter now, per session, and holds that count nothing."""

from __future__ import annotations


async def test_dead_letter_moves_a_leased_message_at_once(outbox):
    """dead_letter() buries a leased message with the reason (no attempts used); the next one is leasable."""
    a = await outbox.put("s", "bad")
    b = await outbox.put("s", "good")
    leased = await outbox.lease("s", 1)
    assert [m.id for m in leased] == [a]
    assert await outbox.dead_letter([a, "999"], reason="undeliverable: HTTP 400") == 1
    (dead,) = await outbox.dead_letters("s")
    assert (dead.id, dead.reason, dead.attempts) == (a, "undeliverable: HTTP 400", 0)
    assert [m.id for m in await outbox.lease("s", 5)] == [b]
    assert await outbox.dead_letter([a], reason="again") == 0  # dead already: ignored


async def test_dead_letter_session_buries_pending_and_leased_of_that_session_only(outbox):
    """dead_letter_session() moves every undelivered message of one session; delivered ones and other sessions stay."""
    done = await outbox.put("s", "m0")
    await outbox.lease("s", 1)
    await outbox.ack([done])
    ids = [await outbox.put("s", f"m{i}") for i in range(1, 4)]
    other = await outbox.put("t", "x")
    await outbox.lease("s", 1)
    assert await outbox.dead_letter_session("s", reason="session deleted") == 3
    assert [d.id for d in await outbox.dead_letters("s")] == ids
    assert await outbox.depth("s") == 0
    assert [m.id for m in await outbox.lease("t", 5)] == [other]


async def test_nack_without_count_uses_no_attempt(outbox):
    """nack(count=False) gives the message back after the delay without counting toward max_attempts."""
    mid = await outbox.put("s", "m")
    for _ in range(20):
        (m,) = await outbox.lease("s", 1)
        await outbox.nack([m.id], 0.0, reason="429 hold", count=False)
    (m,) = await outbox.lease("s", 1)
    assert (m.id, m.attempts) == (mid, 0)
