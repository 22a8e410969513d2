"""Progress drawn where the user reads it: live bars in a terminal or Jupyter, plain lines in a
pipe or a CI log, where a bar would print nothing until it ends.

:func:`show_progress` is the :data:`~stacker.runtime.Stage` that the CLI and ``stacker.auto``
pass to long runs. It yields ``update(done, total=None, note=None)`` for the library's
``on_progress`` callbacks (``note``: what the current unit is doing, e.g. "fold 2: epoch 7/12").
Nothing is drawn before the first update, so a stage that refuses its input before it starts
work shows its error alone.

In lines mode (:class:`Lines`) each update that changes the count or the note prints one line, at
most one per :data:`EVERY_S` seconds while units are fast, and a heartbeat line repeats the state
whenever :data:`HEARTBEAT_S` seconds pass without one: a long stage is never silent in a log.
``STACK_PROGRESS`` chooses the mode (``bars``, ``lines`` or ``off``; default: bars in a terminal
or Jupyter, lines elsewhere) and ``STACK_PROGRESS_SECONDS`` the heartbeat (and, when shorter,
the pace of lines).
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

MODE_ENV = "STACK_PROGRESS"
HEARTBEAT_ENV = "STACK_PROGRESS_SECONDS"
MODES = ("bars", "lines", "off")
HEARTBEAT_S = 10.0   # the longest a pipe waits for a line while a stage runs
EVERY_S = 3.0        # fast units: at most one line per this many seconds (a log stays readable)

_default_console = None


def _console():
    """The console progress goes to by default: stderr (stdout keeps the tables and results)."""
    global _default_console
    if _default_console is None:
        from rich.console import Console

        _default_console = Console(stderr=True)
    return _default_console


def progress_mode(console=None) -> str:
    """'bars' in a terminal or Jupyter (with ipywidgets, which rich's live display needs there),
    'lines' elsewhere; ``STACK_PROGRESS`` (bars, lines, off) decides when set."""
    from stacker.errors import OptionError

    chosen = os.environ.get(MODE_ENV, "").strip().lower()
    if chosen:
        if chosen not in MODES:
            raise OptionError(f"{MODE_ENV} must be one of {', '.join(MODES)}, got '{chosen}'")
        return chosen
    console = console or _console()
    if console.is_jupyter:
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            return "lines"
        return "bars"
    return "bars" if console.is_terminal and not console.is_dumb_terminal else "lines"


def heartbeat_seconds() -> float:
    """:data:`HEARTBEAT_S`, or the seconds ``STACK_PROGRESS_SECONDS`` gives (a positive number)."""
    from stacker.errors import OptionError

    text = os.environ.get(HEARTBEAT_ENV, "").strip()
    if not text:
        return HEARTBEAT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise OptionError(f"{HEARTBEAT_ENV} must be a positive number of seconds, got '{text}'")
    return seconds


def duration(seconds: float) -> str:
    """'0.4 s', '17 s', '2 min 05 s', '1 h 02 min': a log reader's units."""
    seconds = max(0.0, seconds)
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Lines:
    """Plain progress lines for one stage: see the module docstring for when a line is written.

    write: writes one line; clock: seconds (``time.monotonic``; a test passes a fake one);
    every, heartbeat: :data:`EVERY_S`, :data:`HEARTBEAT_S`. Thread-safe: the heartbeat comes from
    :class:`Ticker`'s thread while the work updates from its own.
    """

    def __init__(self, description: str, total: int | None = None, *,
                 write: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
                 every: float = EVERY_S, heartbeat: float = HEARTBEAT_S):
        self.description, self.total, self.write, self.clock = description, total, write, clock
        self.every, self.heartbeat = every, heartbeat
        self.done: int | None = None          # None until the first update
        self.note: str | None = None
        self.began = self.last = clock()
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self.done is not None

    def update(self, done: int | None = None, total: int | None = None,
               note: str | None = None) -> None:
        """The count (None: unchanged), the total (None: unchanged) and the note (None: unchanged)."""
        with self._lock:
            first = not self.started
            changed = first or (done is not None and done != self.done) or (
                note is not None and note != self.note)
            if total is not None:
                self.total = total
            if done is not None or first:
                self.done = done if done is not None else (self.done or 0)
            if note is not None:
                self.note = note
            now = self.clock()
            finished = bool(self.total) and self.done >= self.total   # close() says it next
            if first or (changed and not finished and now - self.last >= self.every):
                self._line(now, self._state(now))

    def tick(self) -> float:
        """The heartbeat: a line with the state when ``heartbeat`` seconds passed without one
        (also before the first update: a stage that works long before counting is not silent).
        Returns the seconds until the next one is due."""
        with self._lock:
            now = self.clock()
            if now - self.last >= self.heartbeat:
                self._line(now, self._state(now) if self.started else f"working, {duration(now - self.began)}")
            return max(0.0, self.last + self.heartbeat - now)

    def close(self, failed: bool = False) -> None:
        """The stage's last line: done and how long it took, or where it stopped (only when it
        had started: an error before any work speaks for itself), with the last note (a tuning's
        final tally of complete and pruned trials)."""
        with self._lock:
            now = self.clock()
            took = duration(now - self.began)
            note = f", {self.note}" if self.note else ""
            if failed:
                if self.started:
                    self._line(now, f"stopped at {self._count()} after {took}{note}")
            else:
                count = self._count() if self.started else ""
                self._line(now, f"done {count} in {took}{note}".replace("  ", " "))

    def _count(self) -> str:
        done = self.done or 0
        return f"{done}/{self.total}" if self.total else f"{done}"

    def _state(self, now: float) -> str:
        elapsed = now - self.began
        done = self.done or 0
        parts = [f"{self._count()} ({100 * done / self.total:.0f}%)" if self.total else
                 f"{done} done", f"{duration(elapsed)} elapsed"]
        if self.total and 0 < done < self.total:
            parts.append(f"about {duration(elapsed * (self.total - done) / done)} left")
        if self.note:
            parts.append(self.note)
        return ", ".join(parts)

    def _line(self, now: float, text: str) -> None:
        self.last = now
        self.write(f"{self.description}: {text}")


class Ticker:
    """A daemon thread that calls ``tick()`` (which returns the seconds until it is due again)
    until stopped: the heartbeat of :class:`Lines`."""

    def __init__(self, tick: Callable[[], float]):
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-progress", daemon=True)

    def _run(self) -> None:
        delay = self._tick()
        while not self._stop.wait(max(delay, 0.01)):
            delay = self._tick()

    def __enter__(self) -> "Ticker":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def _lines(description: str, total: int | None, console) -> Iterator[Callable]:
    def write(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True, emoji=False)

    heartbeat = heartbeat_seconds()
    lines = Lines(description, total, write=write, every=min(EVERY_S, heartbeat), heartbeat=heartbeat)
    with Ticker(lines.tick):
        try:
            yield lines.update
        except BaseException:
            lines.close(failed=True)
            raise
    lines.close()


@contextmanager
def _bars(description: str, total: int | None, console) -> Iterator[Callable]:
    """A rich bar with the count, elapsed time, ETA and the note; started at the first update."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        TextColumn("{task.fields[count]}"), TimeElapsedColumn(),
                        TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                        console=console)
    task = progress.add_task(description, total=total, count="", note="")   # elapsed from here
    state = {"done": 0, "total": total, "started": False}
    lock = threading.Lock()

    def update(done: int | None = None, total_now: int | None = None, note: str | None = None) -> None:
        with lock:
            if not state["started"]:
                state["started"] = True
                progress.start()
            if total_now is not None:
                state["total"] = total_now
            if done is not None:
                state["done"] = done
            count = f"{state['done']}/{state['total']}" if state["total"] else f"{state['done']} done"
            fields = {"count": count, **({"note": note} if note is not None else {})}
            progress.update(task, total=state["total"], completed=state["done"], **fields)

    try:
        yield update
    finally:
        if state["started"]:
            progress.stop()


@contextmanager
def _off(description: str, total: int | None, console) -> Iterator[Callable]:
    yield lambda done=None, total=None, note=None: None


def show_progress(description: str, total: int | None = None, *, console=None,
                  mode: str | None = None):
    """The :data:`~stacker.runtime.Stage` that shows progress (see the module docstring):
    a context manager yielding ``update(done, total=None, note=None)``. console: a rich Console
    (default: stderr); mode: 'bars', 'lines' or 'off' (default: :func:`progress_mode`)."""
    console = console or _console()
    mode = mode or progress_mode(console)
    return {"bars": _bars, "lines": _lines, "off": _off}[mode](description, total, console)


__all__ = ["EVERY_S", "HEARTBEAT_S", "Lines", "Ticker", "duration", "heartbeat_seconds",
           "progress_mode", "show_progress"]
