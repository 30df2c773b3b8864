"""tether.js decisions, run under Node with virtual timers (the browser tests cover the real thing)."""

import subprocess
from pathlib import Path

from tests.conftest import require_binary


def test_tether_js_unit_suite():
    """Single flight, backoff, stable reset, attempt limit, auth stop, 1013 wait, heartbeat, resume, hidden tab, online."""
    node = require_binary("node")
    here = Path(__file__).parent
    proc = subprocess.run([node, "--test", str(here / "tether_js.test.mjs")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "# fail 0" in proc.stdout
