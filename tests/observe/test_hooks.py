"""Observer fed by a real tether.Link over loopback and by the recovery engine's events."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.server import serve as ws_serve

from tether import Action, Backoff, ErrorClass
from tether.link import connect
from tether.observe import Observer
from tether.recovery import Recovered, RecoveryFailed, RecoveryScheduled


def _value(obs: Observer, name: str, **labels: str) -> float | None:
    for fam in text_string_to_metric_families(obs.metrics.render().decode()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


async def test_real_link_events_reach_metrics_perf_and_logs(tmp_path) -> None:
    """A link that drops and reconnects shows up in metrics, the recovery report and the session's log lines."""
    conns: list = []

    async def handler(ws) -> None:
        conns.append(ws)
        async for _ in ws:
            pass

    server = await ws_serve(handler, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    obs = Observer(tmp_path, process_metrics=False)
    link = connect(url, backoff=Backoff(base=0.02, cap=0.05), heartbeat_interval=5.0, stable_after=0.0)
    unsubscribe = obs.attach("sess_1", link)
    try:
        async with link:
            await link.wait_connected(timeout=10)
            await conns[0].close(1011, "server restart")
            for _ in range(500):
                if _value(obs, "tether_connects_total", session="sess_1") == 2:
                    break
                await asyncio.sleep(0.02)
            assert _value(obs, "tether_connects_total", session="sess_1") == 2
            assert _value(obs, "tether_disconnects_total", session="sess_1") >= 1
            assert _value(obs, "tether_session_up", session="sess_1") == 1
            assert _value(obs, "tether_time_to_recover_seconds_count") == 1
            assert obs.perf.report(3600)["recovery"]["count"] == 1
        assert _value(obs, "tether_session_up", session="sess_1") is None  # closed on purpose
    finally:
        unsubscribe()
        server.close()
        await obs.close()
    log = (tmp_path / "logs" / "tether.log").read_text()
    assert "[sess_1] connected (attempt 1)" in log and "[sess_1] disconnected" in log and "[sess_1] closed" in log


async def test_recovery_events_count_by_class_and_record_failures(tmp_path) -> None:
    """Recovery events count per class/action; a call that gave up lands in the error tracker."""
    obs = Observer(tmp_path, logs=False, process_metrics=False)
    try:
        obs.observe_recovery_event(RecoveryScheduled("send", 1, ErrorClass.RATE_LIMIT, Action.WAIT, 3.0, "429"))
        obs.observe_recovery_event(RecoveryScheduled("send", 2, ErrorClass.RATE_LIMIT, Action.WAIT, 3.0, "429"))
        obs.observe_recovery_event(Recovered("send", 3, 2, 6.0))
        obs.observe_recovery_event(RecoveryFailed("send", 4, ErrorClass.AUTH, "401", PermissionError("401 token=abcdef123")))
        assert _value(obs, "tether_recovery_actions_total", error_class="rate_limit", action="wait") == 2
        assert _value(obs, "tether_recovery_actions_total", error_class="auth", action="fail") == 1
        (rec,) = obs.tracker.query(component="recovery")
        assert rec.error_class == "PermissionError" and "abcdef123" not in rec.message
    finally:
        await obs.close()
