"""Logs: four rotating files, session ids on lines, JSON lines, redaction on every handler."""

from __future__ import annotations

import json
import logging

import pytest

from tether import ConfigError
from tether import events as ev
from tether.observe import LOG_FILES, log_link_event, session_context, session_logger, setup_logging

TOKEN = "987654321:ZZdqTcvCH1vGWJxfSeofSAs0K5PALDsXYZ"


@pytest.fixture
def logs(tmp_path):
    setup = setup_logging(tmp_path, fmt="human", max_bytes=4096, backups=2, level="DEBUG")
    yield setup
    setup.close()


def read(setup, name: str) -> str:
    setup.flush()
    return setup.path(name).read_text()


def test_files_route_by_logger_and_level(logs) -> None:
    """tether.log gets all but samples, errors.log warnings+, performance.log and alerts.log their own loggers."""
    logging.getLogger("tether.link").info("plain info")
    logging.getLogger("tether.link").error("bad thing")
    logging.getLogger("tether.performance").info("sample rss=1")
    logging.getLogger("tether.alerts").warning("[FIRING:1] SessionDown")
    assert sorted(p.name for p in logs.directory.iterdir()) == sorted(LOG_FILES)
    main = read(logs, "tether.log")
    assert "plain info" in main and "bad thing" in main and "sample rss=1" not in main
    errors = read(logs, "errors.log")
    assert "bad thing" in errors and "plain info" not in errors and "SessionDown" in errors
    assert read(logs, "performance.log").strip().endswith("sample rss=1")
    alerts = read(logs, "alerts.log")
    assert "SessionDown" in alerts and "sample" not in alerts


def test_session_id_on_each_line(logs) -> None:
    """A line carries [session] from extra, a session logger, or session_context; none otherwise."""
    log = logging.getLogger("tether.service")
    log.info("from extra", extra={"session": "sess_1"})
    session_logger("sess_2", "tether.service").info("from adapter")
    with session_context("sess_3"):
        log.info("from context")
    log.info("no session")
    log_link_event("sess_4", ev.Connected(2, downtime=3.25))
    lines = read(logs, "tether.log").splitlines()
    assert lines[0].endswith("INFO  [sess_1] from extra")
    assert lines[1].endswith("[sess_2] from adapter")
    assert lines[2].endswith("[sess_3] from context")
    assert lines[3].endswith("INFO  no session")
    assert lines[4].endswith("[sess_4] connected (attempt 2, down 3.2s)")


def test_json_lines(tmp_path) -> None:
    """fmt="json" writes one JSON object per line with the session field."""
    setup = setup_logging(tmp_path, fmt="json")
    try:
        logging.getLogger("tether.x").warning("hello %s", "world", extra={"session": "s9"})
        rec = json.loads(read(setup, "tether.log").splitlines()[-1])
        assert rec["msg"] == "hello world" and rec["session"] == "s9" and rec["level"] == "WARNING"
    finally:
        setup.close()


def test_no_secret_in_message_args_or_traceback(logs) -> None:
    """A token in the message, the arguments or an exception's traceback is masked in every file."""
    log = logging.getLogger("tether.telegram")
    log.error("GET https://api.telegram.org/bot%s/getUpdates failed", TOKEN)
    log.warning("config %s", {"bot_token": "literal-token-value", "password": "pw123456"})
    try:
        raise ConnectionError(f"https://api.telegram.org/bot{TOKEN}/getMe unreachable")
    except ConnectionError:
        log.exception("poll failed")
    for name in LOG_FILES:
        text = read(logs, name)
        assert TOKEN.split(":")[1] not in text and "literal-token-value" not in text and "pw123456" not in text
    assert "Traceback" in read(logs, "errors.log")


def test_rotation_keeps_size_bounded(logs) -> None:
    """Files rotate at max_bytes and keep `backups` old copies."""
    for i in range(400):
        logging.getLogger("tether.x").info("line %d %s", i, "x" * 50)
    names = sorted(p.name for p in logs.directory.iterdir() if p.name.startswith("tether.log"))
    assert names == ["tether.log", "tether.log.1", "tether.log.2"]
    assert all((logs.directory / n).stat().st_size <= 4096 for n in names)


def test_bad_options_raise_config_error(tmp_path) -> None:
    """Unknown format or level raise ConfigError naming it."""
    with pytest.raises(ConfigError, match="format"):
        setup_logging(tmp_path, fmt="xml")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="level"):
        setup_logging(tmp_path, level="LOUD")


def test_console_handlers_upstream_see_redacted_records(tmp_path) -> None:
    """Records below the file level still reach the root console redacted."""
    seen: list[str] = []

    class Console(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(self.format(record))

    console = Console()
    logging.getLogger().addHandler(console)
    setup = setup_logging(tmp_path, level="WARNING")
    try:
        logging.getLogger("tether.link").info("polling https://api.telegram.org/bot%s/getUpdates", TOKEN)
    finally:
        setup.close()
        logging.getLogger().removeHandler(console)
    assert seen and TOKEN.split(":")[1] not in seen[0] and "[REDACTED]" in seen[0]
