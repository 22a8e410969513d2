"""One writer at a time per layout root: ``<root>/.stack/lock``.

Commands that write the layout or ``.stack/`` (auto, tune, train, collect, import, blend, the first
level) hold this lock while they run. A second command on the same root refuses at once with one
line naming the running one (or waits up to ``wait`` seconds first). The lock is an advisory
``flock`` on the file, so the kernel drops it when its holder dies: a lock left by a killed process
(a dead pid in the file) is simply taken over. The file itself stays and only records who holds
it. Within one process the lock is re-entrant (``stack auto`` collects while holding it).

``shared=True`` is for workers that are built to share a root with each other: ``stack tune``
workers add trials to one study (the database takes turns) and save its best under their own
file lock, so any number of them may run together, while every other writer is kept out (and
keeps them out): a shared ``flock`` against the others' exclusive one.

Where ``flock`` does not exist (Windows), the root does not exist yet (the command will refuse or
create it) or cannot be written (a read-only layout, which no writer can change anyway), the lock
is skipped.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from stacker.errors import LockedError

LOCK_FILE = "lock"
POLL_S = 0.2               # how often a waiting command tries again
_held: dict[str, list] = {}  # resolved lock path -> [open file, depth] for this process
_guard = threading.Lock()


def lock_path(root: Path | str) -> Path:
    return Path(root) / ".stack" / LOCK_FILE


def _holder(path: Path) -> str:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        started = time.strftime("%H:%M:%S", time.localtime(float(record["started"])))
        return f"`{record['command']}` (pid {record['pid']} on {record['host']}, started {started})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another command"


def _try_lock(handle, shared: bool) -> bool:
    import fcntl

    try:
        fcntl.flock(handle.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _open(path: Path):
    try:
        path.parent.mkdir(exist_ok=True)   # never the root itself: a mistyped --root stays absent
        return open(path, "a+", encoding="utf-8")
    except OSError:
        return None           # a read-only or absent root: nothing written there, nothing to guard


@contextmanager
def root_lock(root: Path | str, command: str, *, wait: float = 0.0,
              shared: bool = False) -> Iterator[None]:
    """Hold the writer's lock of ``root`` for ``command`` (e.g. "stack auto").

    wait: seconds to wait for a running command to finish before refusing (LockedError).
    shared: held together with other shared holders (``stack tune`` workers), never with an
    exclusive one.
    """
    try:
        import fcntl  # noqa: F401
    except ImportError:
        yield
        return
    path = lock_path(root)
    key = str(path.resolve())
    with _guard:
        if key in _held:
            _held[key][1] += 1
            handle = None
        else:
            handle = _open(path)
    if handle is None and key not in _held:
        yield
        return
    if handle is not None:
        _acquire(handle, path, command, wait, shared)
        with _guard:
            _held[key] = [handle, 1]
    try:
        yield
    finally:
        with _guard:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                _held.pop(key)[0].close()      # closing drops the flock


def _acquire(handle, path: Path, command: str, wait: float, shared: bool) -> None:
    deadline = time.monotonic() + max(0.0, wait)
    while not _try_lock(handle, shared):
        if time.monotonic() >= deadline:
            holder = _holder(path)
            handle.close()
            raise LockedError(f"{path.parent.parent} is being written by {holder}; wait for it to "
                              f"finish (or stop it), then run {command} again (STACK_LOCK_WAIT=SECONDS "
                              f"waits for it)")
        time.sleep(POLL_S)
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"command": command, "pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.time()}))
    handle.flush()


__all__ = ["LOCK_FILE", "LockedError", "lock_path", "root_lock"]
