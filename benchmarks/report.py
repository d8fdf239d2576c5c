"""Shared by the benchmark scripts: the machine's description and their section of docs/benchmarks.md."""
from __future__ import annotations

import platform
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
DOC_HEADER = "# Benchmarks\n"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, or the platform's processor string."""
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_section(title: str, text: str, path: Path = DOC) -> None:
    """Replace (or append) the section headed ``title`` in ``path``; every other section is kept."""
    doc = path.read_text() if path.exists() else DOC_HEADER
    section = text.rstrip("\n") + "\n"
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: section + "\n", doc, count=1).rstrip("\n") + "\n"
    else:
        doc = doc.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)
