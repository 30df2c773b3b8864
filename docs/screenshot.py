"""Regenerate docs/dashboard.png: run the real demo, let faults happen, screenshot the dashboard.

Run: .venv/bin/python docs/screenshot.py [--warmup 150] [--out docs/dashboard.png]

Starts ``tether demo`` on a free port with a throw-away data dir, waits until every demo session has
connected and the demo's faults have produced some reconnects (the chart and the event log need a
little history), then takes one screenshot in headless Chromium (Debian's ``chromium``, driven by
Playwright with ``executable_path``; ``playwright install`` is never needed) and stops the demo with
Ctrl-C (SIGINT), as a user would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VIEWPORT = {"width": 1400, "height": 900}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> object | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as res:
            return json.load(res)
    except OSError:
        return None


def wait_until(check, what: str, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


async def shoot(url: str, out: Path) -> None:
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = await browser.new_page(viewport=VIEWPORT)
            await page.goto(url)
            await page.wait_for_function("window.tetherLive && window.tetherLive.state === 'open'", timeout=15_000)
            await page.wait_for_function("document.querySelectorAll('#events li').length >= 10", timeout=15_000)
            # A calm moment between faults: every session connected for a few seconds on the page.
            await page.wait_for_function(
                "(() => { const rows = [...document.querySelectorAll('#sessions tbody tr')];"
                " return rows.length >= 4 && rows.every(r => r.querySelector('.state').textContent === 'connected'"
                " && Date.now() / 1000 - Number(r.querySelector('.uptime').dataset.since) >= 2); })()", timeout=90_000, polling=250)
            await page.wait_for_timeout(300)
            await page.screenshot(path=str(out))
        finally:
            await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=float, default=150.0, help="seconds of demo faults before the screenshot")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tether = Path(sys.executable).with_name("tether")
    with tempfile.TemporaryDirectory(prefix="tether-shot-") as data:
        demo = subprocess.Popen([str(tether), "demo", "--port", str(port), "--data-dir", data, "--fault-every", "6"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=data,
                                env={**os.environ, "NO_COLOR": "1"})
        try:
            def all_connected() -> bool:
                data = get_json(base + "/api/sessions")
                sessions = data.get("sessions", []) if isinstance(data, dict) else []
                return len(sessions) >= 4 and all(s["state"] == "connected" for s in sessions)

            wait_until(all_connected, "the demo's sessions to connect", 60)
            time.sleep(args.warmup)  # faults every 6 s (the demo default): reconnects for the chart, lines for the event log
            asyncio.run(shoot(base + "/", args.out))
        finally:
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(20)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
