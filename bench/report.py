"""Writes BENCHMARKS.md: machine info, then one table per scenario with a ratio against tether."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable

from ._common import ROOT, Row, Scenario, fmt, lib_version


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _nginx_version() -> str:
    path = shutil.which("nginx")
    if not path:
        return "not installed"
    try:
        out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=5)
        return (out.stderr or out.stdout).strip().split("/")[-1]
    except (OSError, subprocess.SubprocessError):
        return "unknown"


LOAD_AT_START = os.getloadavg()  # taken when the bench starts (this module is imported first thing)


def machine_info() -> dict[str, str]:
    import psutil

    return {
        "date (UTC)": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "tether": lib_version("tether"),
        "websockets": lib_version("websockets"),
        "python-socketio": lib_version("python-socketio"),
        "python-engineio": lib_version("python-engineio"),
        "aiohttp": lib_version("aiohttp"),
        "psutil": lib_version("psutil"),
        "nginx": _nginx_version(),
        "load average (1/5/15 min) at start": " ".join(f"{x:.2f}" for x in LOAD_AT_START),
        "load average at end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)) and v == v:
        return float(v)
    return None


def _ratio(row: Row, base: Row | None, primary: str, lower_is_better: bool) -> str:
    if base is None:
        return "n/a"
    if row is base:
        return "1.00× (baseline)"
    a, b = _number(row.figures.get(primary)), _number(base.figures.get(primary))
    if row.system.startswith("tether"):
        # another tether configuration: a ratio, but no winner
        return f"{a / b:.2f}× (tether variant)" if a is not None and b else "(tether variant)"
    raw = row.figures.get(primary)
    if a is None and b and isinstance(raw, str) and raw.startswith("> "):
        # a peer that never got there within the window: the ratio is at least window / tether
        with contextlib.suppress(ValueError):
            bound = float(raw[2:].split()[0]) / b
            return f"> {bound:.2f}× ({'tether better' if lower_is_better else 'tether worse'})"
    if a is None or b is None:
        return "n/a"
    if b == 0:
        if not a:
            return "1.00× (equal)"
        return f"∞ ({'tether better' if lower_is_better else 'tether worse'})"
    r = a / b
    better = (r > 1) if lower_is_better else (r < 1)
    if abs(r - 1) < 0.005:
        return "1.00× (equal)"
    return f"{r:.2f}× ({'tether better' if better else 'tether worse'})"


def _groups(rows: Iterable[Row]) -> list[tuple[str, list[Row]]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r.group, []).append(r)
    return list(out.items())


def scenario_markdown(sc: Scenario) -> str:
    lines = [f"## {sc.title}", ""]
    if sc.error:
        lines += [f"**Scenario failed:** {sc.error}", ""]
    direction = "lower is better" if sc.lower_is_better else "higher is better"
    if sc.rows:
        lines += [
            f"Ratio = system's `{sc.primary}` ÷ tether's ({direction}).",
            "",
        ]
    for group, rows in _groups(sc.rows):
        if group:
            lines += [f"**{group}**", ""]
        cols: list[str] = []
        for r in rows:
            for k in r.figures:
                if k not in cols:
                    cols.append(k)
        base = next((r for r in rows if r.baseline), None)
        lines.append("| system | " + " | ".join(cols) + " | vs tether |")
        lines.append("|---|" + "---|" * len(cols) + "---|")
        for r in rows:
            cells = [fmt(r.figures.get(c, "")) for c in cols]
            name = r.system + (f" ({r.note})" if r.note else "")
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {_ratio(r, base, sc.primary, sc.lower_is_better)} |")
        lines.append("")
    for n in sc.notes:
        lines.append(f"- {n}")
    if sc.seconds:
        lines.append(f"- Scenario wall time: {sc.seconds:.0f} s.")
    lines.append("")
    return "\n".join(lines)


def summary_markdown(scenarios: list[Scenario]) -> list[str]:
    """One line per scenario (and group): tether's headline figure and each peer's ratio."""
    lines = ["## Summary", "", "Headline figure per scenario; the ratio is the peer's figure ÷ tether's.", ""]
    for sc in scenarios:
        if sc.error and not sc.rows:
            lines.append(f"- **{sc.title}**: {sc.error}")
            continue
        for group, rows in _groups(sc.rows):
            base = next((r for r in rows if r.baseline), None)
            label = f"{sc.title}{f' ({group})' if group else ''}"
            if base is None or sc.primary not in base.figures:
                figs = "; ".join(f"{r.system}: {fmt(r.figures.get(sc.primary, r.figures.get('result', '')))}" for r in rows)
                lines.append(f"- **{label}** ({sc.primary}): {figs}")
                continue
            peers = [
                f"{r.system} {fmt(r.figures.get(sc.primary))}, {_ratio(r, base, sc.primary, sc.lower_is_better)}"
                for r in rows if r is not base
            ]
            lines.append(f"- **{label}**: {base.system} {fmt(base.figures[sc.primary])} {sc.primary}"
                         + (f" vs {'; '.join(peers)}" if peers else ""))
    lines.append("")
    return lines


def write(scenarios: list[Scenario], path: Path | None = None, preamble: list[str] | None = None) -> Path:
    path = path or ROOT / "BENCHMARKS.md"
    info = machine_info()
    lines = [
        "# Benchmarks: tether vs the clients users pick today",
        "",
        "Written by `python -m bench` (`make bench`); every scenario measures tether and its peers in the same",
        "run, on the same machine, over 127.0.0.1 only. Figures are from one run on a shared 2-core machine",
        "(see the load averages below); treat differences under ~10 % as noise, and compare rows of one table",
        "rather than figures across runs. Peers' figures to beat: `../shared/PEERS.md`.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    lines.append("")
    lines += preamble or []
    lines += summary_markdown(scenarios)
    for sc in scenarios:
        lines.append(scenario_markdown(sc))
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
