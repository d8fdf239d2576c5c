"""Crash-safe, resumable result files of an annotation run.

``OUT.jsonl`` holds one line per **accepted** clip, in the ``think_jsonl`` format the data modules
read (``id``, ``caption``, ``video``, ``audio``, ``label``, ``duration`` plus the raw answers and
usage); ``OUT.rejected.jsonl`` (same folder and stem) one line per **rejected** clip with its
reason. Keeping rejections out of ``OUT.jsonl`` lets ``VGGSoundThinkDataModule`` and
``read_think_jsonl`` load the output unchanged.

Guarantees:

- **Atomic lines.** A record is one ``os.write`` of one complete line to a file opened with
  ``O_APPEND``, followed by ``fsync``; a ``threading.Lock`` keeps writer threads from
  interleaving. A process killed mid-write can leave at most a partial last line, which the next
  run cuts off (it was never a finished clip) before appending.
- **One run per output.** An exclusive ``flock`` on ``OUT.jsonl.lock`` refuses a second process;
  the kernel releases it when the holder dies, even by SIGKILL.
- **Resume.** Ids found in either file are finished and skipped. ``retry_rejected`` first rewrites
  ``OUT.rejected.jsonl`` without its records (a temporary file, ``fsync``, atomic ``rename``), so
  those clips are annotated again and each id still appears once.
- **No duplicates.** An id is written only when it is not finished, by the one thread that owns the
  clip; a file found with a repeated id is reported, never silently merged.
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any


def rejected_path(out: str | Path) -> Path:
    """``OUT.rejected.jsonl`` next to ``OUT.jsonl`` (any output suffix is replaced)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.rejected.jsonl")


def _repair_tail(path: Path) -> int:
    """Cuts a partial last line (no newline) left by a killed writer; returns the bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return 0
        # Walk back to the last newline; a file without one is a single partial line.
        position = size
        chunk = 4096
        keep = 0
        while position > 0:
            start = max(0, position - chunk)
            handle.seek(start)
            block = handle.read(position - start)
            index = block.rfind(b"\n")
            if index >= 0:
                keep = start + index + 1
                break
            position = start
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    return size - keep


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Reads the complete lines of a result file (a partial last line is ignored).

    Raises:
        ValueError: naming the file and line of a complete line that is not a JSON object with an ``id``.
    """
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith("\n") or not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: invalid JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise ValueError(f"{path}, line {number}: expected a JSON object with a string 'id'")
            records.append(record)
    return records


class ResultStore:
    """The accepted and rejected result files of one output, opened for appending.

    Use as a context manager; :meth:`open` takes the lock, repairs torn tails and loads the
    finished ids.

    Args:
        out: ``OUT.jsonl``.
        retry_rejected: forget earlier rejections so that those clips run again.
    """

    def __init__(self, out: str | Path, retry_rejected: bool = False):
        self.out = Path(out)
        self.rejected = rejected_path(self.out)
        self.retry_rejected = retry_rejected
        self.accepted_ids: set[str] = set()
        self.rejected_ids: set[str] = set()
        self.repaired_bytes = 0
        self.forgotten = 0
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}
        self._lock_fd: int | None = None

    @property
    def finished(self) -> set[str]:
        """Ids with a result in either file."""
        return self.accepted_ids | self.rejected_ids

    def __enter__(self) -> ResultStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Locks the output, cuts torn lines, loads finished ids and opens both files for appending.

        Raises:
            ValueError: another process holds the output, a corrupt line, or an id repeated.
        """
        if self.out == self.rejected:
            raise ValueError(f"{self.out}: the output must not be named *.rejected.jsonl")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(f"{self.out}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise ValueError(f"{self.out}: another annotate run is writing this output "
                             f"(lock {self.out}.lock is held)") from None
        try:
            self._load()
        except BaseException:
            self.close()
            raise
        for name, path in (("accepted", self.out), ("rejected", self.rejected)):
            self._fds[name] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _load(self) -> None:
        for path in (self.out, self.rejected):
            self.repaired_bytes += _repair_tail(path)
        seen: dict[str, str] = {}
        for name, path in (("accepted", self.out), ("rejected", self.rejected)):
            ids = self.accepted_ids if name == "accepted" else self.rejected_ids
            for record in read_records(path):
                if record["id"] in seen:
                    raise ValueError(f"{path}: clip id {record['id']!r} already has a result in {seen[record['id']]}")
                seen[record["id"]] = str(path)
                ids.add(record["id"])
        if self.retry_rejected and self.rejected_ids:
            self.forgotten = len(self.rejected_ids)
            self.rejected_ids = set()
            temporary = self.rejected.with_name(self.rejected.name + ".tmp")
            with temporary.open("wb") as handle:
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(self.rejected)
            directory = os.open(self.rejected.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def write(self, record: dict[str, Any], accepted: bool) -> None:
        """Appends one result as one atomic, fsynced line.

        Raises:
            AssertionError: the id already has a result (a pipeline bug, never a user error).
        """
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            assert record["id"] not in self.finished, f"duplicate result for {record['id']}"
            fd = self._fds["accepted" if accepted else "rejected"]
            written = os.write(fd, data)
            # A regular-file append writes everything or fails; a short count means a full disk.
            if written != len(data):
                raise OSError(f"{self.out}: short write ({written} of {len(data)} bytes); disk full?")
            os.fsync(fd)
            (self.accepted_ids if accepted else self.rejected_ids).add(record["id"])

    def close(self) -> None:
        """Closes the files and releases the lock."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
