"""Schemathesis over the OpenAPI schema of a real `tether serve` finds no 5xx (bounded run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.service.conftest import free_port


def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    """Coverage + fuzzing phases, few examples per operation, check not_a_server_error; SSE excluded (endless)."""
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    assert st, "schemathesis is a dev dependency"
    port = free_port()
    cfg = tmp_path / "t.toml"
    cfg.write_text("restart_delay = 0.01\nmax_message_bytes = 4096\n[sessions]\nbackoff_base = 0.05\nbackoff_cap = 0.2\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    proc = subprocess.Popen([sys.executable, "-m", "tether.cli", "serve", "--config", str(cfg), "--port", str(port),
                             "--data-dir", str(tmp_path / "data")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                if httpx.get(f"{base}/health", trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        httpx.post(f"{base}/api/sessions", json={"id": "s1", "kind": "websocket",
                                                 "options": {"url": "ws://127.0.0.1:9/"}}, trust_env=False)
        run = subprocess.run(
            [st, "run", f"{base}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "3",
             "--phases", "coverage,fuzzing", "--exclude-path", "/api/events", "--request-timeout", "10",
             "--workers", "2", "--generation-deterministic"],
            capture_output=True, text=True, timeout=150, env={**env, "NO_COLOR": "1"}, cwd=tmp_path,
        )
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        assert "passed" in run.stdout
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
        out = proc.stdout.read().decode() if proc.stdout else ""
        assert "Traceback" not in out and "unhandled error" not in out, out[-3000:]
