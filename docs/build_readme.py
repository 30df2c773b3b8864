"""Assemble README.md from docs/*.md: one source of truth per section.

Run: python docs/build_readme.py   (the intro and quick start live in docs/_intro.md)
"""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).parent
ORDER = [
    ("link.md", "The self-healing connection"),
    ("recovery.md", "Recovery engine"),
    ("store.md", "Durable delivery"),
    ("service.md", "Gateway service"),
    ("telegram.md", "Telegram"),
    ("observe.md", "Observability and alerts"),
    ("dashboard.md", "Dashboard"),
    ("config.md", "Configuration"),
    ("supervise.md", "Supervisor"),
    ("scaleout.md", "Scale-out with Redis"),
]


def demote(text: str) -> str:
    """Shift every heading one level down (# → ##), leaving code blocks alone."""
    out, fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and re.match(r"^#{1,5} ", line):
            line = "#" + line
        out.append(line)
    return "\n".join(out).strip() + "\n"


def main() -> None:
    parts = [(DOCS / "_intro.md").read_text().strip() + "\n"]
    toc = []
    for name, title in ORDER:
        path = DOCS / name
        if not path.exists():
            continue
        body = path.read_text()
        body = re.sub(r"^# .*\n", "", body, count=1)  # the doc's own title becomes ours
        body = body.replace("](docs/", "](docs/").replace("](dashboard.png)", "](docs/dashboard.png)")
        anchor = re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")
        toc.append(f"- [{title}](#{anchor}) ([docs/{name}](docs/{name}))")
        parts.append(f"## {title}\n\n" + demote(body))
    parts.insert(1, "## Contents\n\n" + "\n".join(toc) + "\n- [Benchmarks](BENCHMARKS.md) · [Architecture](docs/ARCHITECTURE.md)\n")
    (DOCS.parent / "README.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
