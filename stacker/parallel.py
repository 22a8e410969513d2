"""Run independent units of work here, or on a dask.distributed cluster.

A unit is one fold of a first-level model, or one (seed, fold) of a level-2 run: it reads only its
inputs and returns its result, so units can run in any order on any machine. :func:`map_units` is
the one place that decides where they run:

- ``scheduler=None``: one after another in this process (the plain loop; dask is not imported);
- ``scheduler="tcp://host:8786"``: one dask task per unit on the cluster of that scheduler. Large
  inputs given as ``shared`` are sent to the cluster once, not with every task.

What the cluster guarantees and what the callers add: a task whose worker dies is rerun on another
worker (dask retries it up to ``distributed.scheduler.allowed-failures`` times, 3 by default);
results are collected as soon as they finish and then released, so a finished unit is not rerun
when its worker dies later; units that write files write them atomically (temporary file, then
rename), so a worker killed mid-write leaves no half file under a real name. Workers on other
machines must see the same files at the same paths (a shared filesystem).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from stacker.errors import ClusterError, StackError
from stacker.runtime import ProgressCallback

CONNECT_TIMEOUT_S = 30
PROBE_TIMEOUT_S = 5        # a plain TCP connect first: a wrong port fails at once, not after 30 s


def map_units(fn: Callable[..., Any], units: Sequence[Any], *, shared: dict | None = None,
              scheduler: str | None = None, on_progress: ProgressCallback | None = None,
              retries: int = 1) -> list:
    """``[fn(unit, **shared) for unit in units]``, computed here or on a dask cluster.

    fn: a module-level function (it is pickled and sent to the workers when ``scheduler`` is set).
    shared: keyword arguments passed to every call (data, models factories, paths); on a cluster
    each value is scattered once.
    scheduler: the address of a running ``dask.distributed`` scheduler, or None to run here.
    on_progress: ``on_progress(done, len(units))`` at the start and after each finished unit (in
    the order they finish on a cluster).
    retries: on a cluster, how many more times a unit that raised something other than a
    StackError is tried (a unit whose worker died is rerun by dask regardless).
    Returns the results in the order of ``units``; the first unit that fails raises its error.
    """
    units = list(units)
    shared = dict(shared or {})
    scheduler = (scheduler or "").strip() or None     # a blank STACK_SCHEDULER means "here"
    if on_progress is not None:
        on_progress(0, len(units))
    if not scheduler:
        results = []
        for done, unit in enumerate(units, start=1):
            results.append(fn(unit, **shared))
            if on_progress is not None:
                on_progress(done, len(units))
        return results
    return _map_on_cluster(fn, units, shared, scheduler, on_progress, retries)


def _map_on_cluster(fn, units: list, shared: dict, scheduler: str,
                    on_progress: ProgressCallback | None, retries: int) -> list:
    try:
        from distributed import Client, KilledWorker, as_completed
    except ImportError:
        raise ClusterError(f"--scheduler {scheduler} needs dask.distributed, which is not "
                           "installed; pip install -e '.[dask]' (or drop --scheduler and "
                           "STACK_SCHEDULER to run here)") from None
    try:
        _probe(scheduler)
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as error:
        raise ClusterError(f"cannot reach the dask scheduler at {scheduler} ({error}); start one "
                           "with `dask scheduler` and workers with `dask worker ADDRESS`, or "
                           "drop --scheduler and STACK_SCHEDULER to run here") from None
    with client:
        # one future per shared value; a list is wrapped so that scatter sends it as one object.
        # Broadcast: scattered data has no lineage, so a single copy dies with its worker and
        # every unit still waiting on it is cancelled; a copy on each worker survives one death
        remote = {key: client.scatter([value], hash=False, broadcast=True)[0]
                  for key, value in shared.items()}
        futures = client.map(_run_unit, units, pure=False, retries=retries, unit_fn=fn, **remote)
        position = {future.key: i for i, future in enumerate(futures)}
        pending = as_completed(futures, loop=client.loop, with_results=True)   # raises errors
        del futures   # only as_completed holds them now: released one by one below
        results: list = [None] * len(units)
        done = 0
        try:
            for future, outcome in pending:
                if isinstance(outcome, BaseException):    # cancelled: its inputs were lost
                    index = position[future.key]
                    raise ClusterError(f"the task of unit {units[index]!r} was cancelled by the "
                                       f"cluster ({type(outcome).__name__}): the workers holding "
                                       "its inputs died; rerun to resume") from None
                result, user_error = outcome
                if user_error is not None:
                    raise user_error
                results[position[future.key]] = result
                # released once collected: a worker that dies later cannot make dask rerun it
                future.release()
                done += 1
                if on_progress is not None:
                    on_progress(done, len(units))
        except KilledWorker as error:
            index = position.get(error.task)
            what = "a task" if index is None else f"the task of unit {units[index]!r}"
            raise ClusterError(f"{what} killed every worker that ran it "
                               f"({error.allowed_failures + 1} in a row; out of memory?); see the "
                               "workers' logs") from None
        finally:
            for future in list(pending.futures):
                future.cancel()
    return results


def _probe(address: str) -> None:
    """OSError at once when nothing listens at a ``tcp://host:port`` address (other protocols are
    left to dask): without it a wrong port costs the whole connect timeout, and the half-made
    client prints a traceback when the interpreter exits."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme != "tcp":
        return
    if not parts.hostname:   # dask would wait out its whole timeout on 'tcp://'
        raise ValueError("no host in the address; write tcp://HOST:PORT")
    try:
        port = parts.port or 8786
    except ValueError as error:
        raise ValueError(f"bad port in {address!r}") from error
    with socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S):
        pass


def _run_unit(unit, *, unit_fn, **shared) -> tuple[Any, StackError | None]:
    """On a worker: (the unit's result, None), or (None, the StackError it raised). A problem with
    the user's files or options comes back as a value, so dask does not retry it (it would fail
    the same way); other exceptions (a full disk, memory) are retried ``retries`` times."""
    try:
        return unit_fn(unit, **shared), None
    except StackError as error:
        return None, error


__all__ = ["map_units"]
