"""Every CPU benchmark in one run (``make bench``), with the machine recorded at the top of docs/benchmarks.md.

Runs, one after another, each as its own process (so one failing does not stop the others):

=============  ==========================================  ==============================================
name           command                                     section of docs/benchmarks.md
=============  ==========================================  ==============================================
vocoder        ``benchmarks/vocoder.py --threads 1``       Vocoder real-time factor (CPU)
conditioner    ``benchmarks/conditioner.py``               MLLM conditioner: prefix caching (CPU)
dit            ``benchmarks/dit.py``                       MM-DiT (CPU)
media          ``benchmarks/media.py``                     Media decoding (CPU), against the ffmpeg CLI
=============  ==========================================  ==============================================

then writes the section "## Machine" right under the page title: CPU model, cores, memory, Python,
torch, PyAV / FFmpeg and the ffmpeg CLI, the commit, the date and the load at the start (the
machine is usually shared), and which benchmarks ran and how long each took. The GPU check
(``benchmarks/gpu_check.sh``) is separate: it needs a CUDA device.

Usage::

    .venv/bin/python benchmarks/run_all.py                     # all, ~10 min on 2 cores
    .venv/bin/python benchmarks/run_all.py --only media dit
    .venv/bin/python benchmarks/run_all.py --no-write          # print only

Exit status 1 when any benchmark failed (media: also when decoding is over 1.5× the ffmpeg CLI).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from report import DOC, DOC_HEADER, cpu_name, write_section  # benchmarks/ is the script folder, so this resolves

HERE = Path(__file__).resolve().parent
BENCHMARKS: dict[str, list[str]] = {
    "vocoder": ["vocoder.py", "--threads", "1"],
    "conditioner": ["conditioner.py"],
    "dit": ["dit.py"],
    "media": ["media.py"],
}
SECTION = "## Machine"


def machine() -> dict[str, str]:
    """What the numbers below depend on."""
    import av
    import torch

    mem = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE) \
        if Path("/proc/meminfo").exists() else None
    ffmpeg = shutil.which("ffmpeg")
    ffmpeg_version = (" ".join(subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.split()[:3])
                      + f" ({ffmpeg})" if ffmpeg else "not installed")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
    gpu = (f"{torch.cuda.get_device_name(0)} (not used by these CPU benchmarks)" if torch.cuda.is_available()
           else "none")
    return {
        "CPU": cpu_name(),
        "cores": f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable by this process)",
        "memory": f"{int(mem.group(1)) / 2 ** 20:.1f} GiB" if mem else "unknown",
        "GPU": gpu,
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "torch": torch.__version__,
        "PyAV / FFmpeg libraries": f"{av.__version__} / libavcodec "
                                   f"{'.'.join(map(str, av.library_versions['libavcodec']))}",
        "ffmpeg CLI": ffmpeg_version,
        "commit": (commit.stdout.strip() or "unknown") + (" (+ uncommitted changes)" if _dirty() else ""),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "1-min load average at the start": f"{os.getloadavg()[0]:.2f}",
    }


def _dirty() -> bool:
    status = subprocess.run(["git", "status", "--porcelain"], cwd=HERE, capture_output=True, text=True)
    return bool(status.stdout.strip())


def markdown(info: dict[str, str], results: list[tuple[str, int, float]], argv: list[str] | None = None) -> str:
    command = " ".join(["benchmarks/run_all.py", *(argv or [])])
    lines = [SECTION, "", f"`.venv/bin/python {command}` (`make bench` runs it without arguments) ran the "
             "benchmarks in the second table on the machine below; a section of a benchmark that is not listed "
             "there comes from an earlier run.", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    lines += ["", "| benchmark | command | exit status | minutes |", "|---|---|---:|---:|"]
    lines += [f"| {name} | `benchmarks/{' '.join(BENCHMARKS[name])}` | {rc} | {seconds / 60:.1f} |"
              for name, rc, seconds in results]
    return "\n".join(lines) + "\n"


def write_machine_section(text: str, path: Path = DOC) -> None:
    """Replace the machine section, or put it first (under the page title) when it is new."""
    doc = path.read_text() if path.exists() else DOC_HEADER
    if re.search(rf"^{re.escape(SECTION)}$", doc, re.MULTILINE):
        write_section(SECTION, text, path)
        return
    body = doc[len(DOC_HEADER):] if doc.startswith(DOC_HEADER) else doc
    path.write_text(DOC_HEADER + "\n" + text + "\n" + body.lstrip("\n"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run these benchmarks only")
    parser.add_argument("--no-write", action="store_true", help=f"print the tables, do not update {DOC}")
    args = parser.parse_args(argv)
    info = machine()  # before the runs: the load average is the other users', not ours
    results = []
    for name in args.only or list(BENCHMARKS):
        cmd = [sys.executable, str(HERE / BENCHMARKS[name][0]), *BENCHMARKS[name][1:],
               *(["--no-write"] if args.no_write else [])]
        print(f"=== {name}: {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        rc = subprocess.run(cmd, cwd=HERE.parent).returncode
        results.append((name, rc, time.perf_counter() - start))
        print(f"=== {name}: exit status {rc} after {results[-1][2] / 60:.1f} min", flush=True)
    text = markdown(info, results, sys.argv[1:] if argv is None else argv)
    print(text)
    if not args.no_write:
        write_machine_section(text)
    failed = [name for name, rc, _ in results if rc]
    print(f"benchmarks failed: {', '.join(failed)}" if failed else "all benchmarks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
