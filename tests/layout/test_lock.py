"""The writer's lock of a layout root: one writer at a time, stale locks taken over, re-entrant."""

import json
import subprocess
import sys
import textwrap
import time

import pytest

from stacker.errors import LockedError
from stacker.layout.lock import lock_path, root_lock

pytest.importorskip("fcntl")


def _hold_in_child(root, seconds: float):
    """A second process that holds the lock of ``root`` for ``seconds``; returns once it holds it."""
    code = textwrap.dedent(f"""
        import sys, time
        from stacker.layout.lock import root_lock
        with root_lock({str(root)!r}, "stack auto"):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_writer_is_refused_naming_the_running_one(tmp_path):
    child = _hold_in_child(tmp_path, 30)
    try:
        with pytest.raises(LockedError, match=r"being written by `stack auto` \(pid %d" % child.pid):
            with root_lock(tmp_path, "stack collect"):
                pass
    finally:
        child.kill()
        child.wait()


def test_a_writer_may_wait_for_the_running_one(tmp_path):
    child = _hold_in_child(tmp_path, 1.0)
    began = time.monotonic()
    with root_lock(tmp_path, "stack collect", wait=20):
        waited = time.monotonic() - began
        assert json.loads(lock_path(tmp_path).read_text())["command"] == "stack collect"
    child.wait()
    assert waited > 0.2


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    child = _hold_in_child(tmp_path, 30)
    child.kill()
    child.wait()
    # the file still names the dead pid, but the kernel dropped its flock
    assert json.loads(lock_path(tmp_path).read_text())["pid"] == child.pid
    with root_lock(tmp_path, "stack import"):
        assert json.loads(lock_path(tmp_path).read_text())["command"] == "stack import"


def test_the_lock_is_reentrant_within_one_process_and_released_after(tmp_path):
    with root_lock(tmp_path, "stack auto"):
        with root_lock(tmp_path, "stack collect"):
            pass
        # still held by the outer one: another process is refused
        code = (f"from stacker.layout.lock import root_lock\n"
                f"with root_lock({str(tmp_path)!r}, 'x'): pass\n")
        refused = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert refused.returncode != 0 and "LockedError" in refused.stderr
    # released: another process gets it
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_read_only_root_is_not_locked(tmp_path):
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o555)
    try:
        with root_lock(root, "stack collect"):
            pass
    finally:
        root.chmod(0o755)


def test_an_absent_root_is_not_created(tmp_path):
    """A mistyped --root stays absent: the command refuses on its own terms, no `.stack/lock` left."""
    with root_lock(tmp_path / "typo", "stack collect"):
        pass
    assert not (tmp_path / "typo").exists()


def test_shared_holders_run_together_and_keep_writers_out(tmp_path):
    """`stack tune` workers share the root with each other, never with another writer."""
    code = textwrap.dedent(f"""
        import sys
        from stacker.layout.lock import root_lock
        with root_lock({str(tmp_path)!r}, "stack tune", shared=True):
            print("held", flush=True)
            sys.stdin.read()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with root_lock(tmp_path, "stack tune", shared=True):
            pass
        with pytest.raises(LockedError, match="`stack tune`"):
            with root_lock(tmp_path, "stack train"):
                pass
    finally:
        child.stdin.close()
        child.wait()
