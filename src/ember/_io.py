"""Atomic file writes, and the clean-up of writes a kill interrupted (the I/O every layer needs).

A write goes to ``.NAME.tmp-PID`` beside the target, is fsynced, renamed over the target, and the
folder is fsynced: readers see the old file or the whole new one. A process killed mid-write
leaves its ``.tmp-PID`` file; :func:`remove_orphans` deletes those whose process is gone.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "a.json"
    >>> atomic_write_bytes(path, b"{}")
    >>> path.read_bytes(), remove_orphans(path.parent)
    (b'{}', [])
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["atomic_write_bytes", "remove_orphans"]

TMP_FILE = re.compile(r"\..+\.tmp-(\d+)")


def atomic_write_bytes(path: Path, data: bytes | Sequence[bytes | memoryview]) -> None:
    """Write ``data`` (bytes, or buffers in order) to ``path`` so that readers see either the old
    file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            for chunk in [data] if isinstance(data, bytes | bytearray | memoryview) else data:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_orphans(folder: Path) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left in ``folder``; returns them.

    A ``.NAME.tmp-PID`` file whose process still runs (another writer at work) is left alone.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        m = TMP_FILE.fullmatch(path.name)
        if m and not _alive(int(m.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is writing nothing yet: the file is a dead namesake's
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid > 0
    return True
