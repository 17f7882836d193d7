"""Where units run: in this process, in a pool of local processes, or on a Dask cluster.

Every engine runs the same function on the same bytes (`unit_run.run_unit_bytes`) and
hands each result back as bytes, so results do not depend on the engine. Engines keep a
bounded number of units in flight, so the driver never holds more than a few units'
tasks or results in memory whatever the size of the run.

A local worker that dies (killed, out of memory) breaks the process pool: the pool is
started again and the units it held are run again, up to `RETRIES` times. On Dask, a
unit whose worker is lost is run again by the scheduler, and a unit that raises is
retried `RETRIES` times.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from twin.errors import TwinError
from twin.region.unit_run import run_unit, run_unit_bytes
from twin.region.workdir import dumps

RETRIES = 2

Done = Callable[[str, bytes | None, str | None], None]
"""Called once per unit, in the driver: (unit id, result bytes or None, error or None)."""


@dataclass(frozen=True)
class Execution:
    """How a run executes; none of this changes its results."""

    workers: int = 1
    """Local worker processes; 1 runs the units in this process."""
    scheduler: str | None = None
    """Address of a Dask distributed scheduler (tcp://host:8786); overrides `workers`."""
    work_dir: Path | None = None
    """Where the manifest and finished units are kept, to resume; a temporary folder when None."""
    unit_size_m: float = 1000.0
    """Side of the square units of work (1 km: IGN LiDAR HD tiles)."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("the number of workers must be at least 1")
        if not self.unit_size_m >= 10:
            raise ValueError("units must be at least 10 m wide")

    def describe(self) -> str:
        if self.scheduler:
            return f"Dask scheduler {self.scheduler}"
        return "this process" if self.workers == 1 else f"{self.workers} local processes"


def run_units(tasks: Iterable[tuple[str, object]], execution: Execution, done: Done, on_building=None) -> None:
    """Runs every (unit id, UnitTask) and calls `done` for each as it finishes."""
    if execution.scheduler:
        _run_on_dask(tasks, execution.scheduler, done)
    elif execution.workers == 1:
        _run_here(tasks, done, on_building)
    else:
        _run_in_processes(tasks, execution.workers, done)


def _run_here(tasks: Iterable[tuple[str, object]], done: Done, on_building) -> None:
    for unit_id, task in tasks:
        try:
            result = dumps(run_unit(task, on_building))
        except Exception as error:
            done(unit_id, None, _describe(error))
        else:
            done(unit_id, result, None)


def _run_in_processes(tasks: Iterable[tuple[str, object]], workers: int, done: Done) -> None:
    # Spawned, not forked: the driver may hold threads (progress display) and large
    # memory that workers must not inherit.
    context = multiprocessing.get_context("spawn")
    pending = _Pending(((unit_id, dumps(task)) for unit_id, task in tasks), window=2 * workers)
    attempts: dict[str, int] = {}
    while not pending.exhausted():
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures: dict[concurrent.futures.Future, tuple[str, bytes]] = {}
            try:
                while True:
                    for unit_id, payload in pending.take(pending.window - len(futures)):
                        futures[pool.submit(run_unit_bytes, payload)] = (unit_id, payload)
                    if not futures:
                        break
                    finished, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in finished:
                        unit_id, payload = futures.pop(future)
                        error = future.exception()
                        if isinstance(error, concurrent.futures.process.BrokenProcessPool):
                            raise error
                        done(unit_id, None if error else future.result(), _describe(error) if error else None)
            except concurrent.futures.process.BrokenProcessPool:
                for unit_id, payload in futures.values():
                    attempts[unit_id] = attempts.get(unit_id, 0) + 1
                    if attempts[unit_id] > RETRIES:
                        done(unit_id, None, f"its worker process died {attempts[unit_id]} times (out of memory?)")
                    else:
                        pending.retry(unit_id, payload)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise


def _run_on_dask(tasks: Iterable[tuple[str, object]], address: str, done: Done) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:  # pragma: no cover - dask is a dependency
        raise TwinError("--scheduler needs dask distributed: pip install 'dask[distributed]'") from None
    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError) as error:
        raise TwinError(f"cannot reach the Dask scheduler at {address} ({error}); start it or check the address") from None
    with client:
        window = max(2, 2 * sum(client.nthreads().values()))
        pending = _Pending(((unit_id, dumps(task)) for unit_id, task in tasks), window=window)
        names: dict[object, str] = {}
        running = as_completed()

        def submit(count: int) -> None:
            for unit_id, payload in pending.take(count):
                key = f"twin-unit-{unit_id}-{uuid.uuid4().hex}"  # never a result cached from another run
                future = client.submit(run_unit_bytes, payload, key=key, retries=RETRIES, pure=False)
                names[future] = unit_id
                running.add(future)

        submit(window)
        for future in running:
            unit_id = names.pop(future)
            if future.status == "finished":
                done(unit_id, future.result(), None)
            else:
                done(unit_id, None, _describe(future.exception()))
            future.release()
            submit(1)


class _Pending:
    """Tasks not submitted yet: drawn lazily from the planner, plus units to run again."""

    def __init__(self, tasks: Iterator[tuple[str, bytes]], window: int) -> None:
        self._tasks = iter(tasks)
        self._again: list[tuple[str, bytes]] = []
        self._done = False
        self.window = window

    def take(self, count: int) -> list[tuple[str, bytes]]:
        taken = []
        while len(taken) < count and self._again:
            taken.append(self._again.pop(0))
        while len(taken) < count and not self._done:
            try:
                taken.append(next(self._tasks))
            except StopIteration:
                self._done = True
        return taken

    def retry(self, unit_id: str, payload: bytes) -> None:
        self._again.append((unit_id, payload))

    def exhausted(self) -> bool:
        if self._again:
            return False
        if self._done:
            return True
        try:
            self._again.append(next(self._tasks))
        except StopIteration:
            self._done = True
        return not self._again


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    return f"internal error: {type(error).__name__}: {error}{where}"
