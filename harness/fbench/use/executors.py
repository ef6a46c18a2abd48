"""Where the runs of a sweep (``fbench ablate``, ``fbench regenerate``, ``fbench.sweep``) train:
here, one after another or side by side in a process pool (``local``), as Ray tasks (``ray``),
or as SLURM jobs through submitit (``slurm``). fbench schedules nothing itself.

Each run is one task: it rebuilds its RunConfig from ``config.to_dict()``, resolves and trains
it into ``config.out`` (a path every worker sees) exactly as a local run does, and hands back an
:class:`Outcome` (the run directory, or the error: a failed run never stops the others). Tables
are built from the run store afterwards, so a sweep that died half-way resumes by sending only
the missing runs again. Ray and submitit are imported only when used (``.[cluster]`` extra).
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from fbench.errors import FbenchError

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from fbench.train.config import RunConfig

INSTALL = 'pip install -e ".[cluster]"'
_TRAINING = False  # whether this (worker) process is inside a run: see _child_init
_STOPPING = False  # a pool worker told to stop starts no further run
NOT_STARTED = "not started: the sweep was interrupted"
STOPPED_BY_SIGNAL = ("interrupted: ", NOT_STARTED)  # a worker's outcome when Ctrl-C stopped it


@dataclass(frozen=True)
class Task:
    """One run of a sweep: its place, its name in lines (``narrow``, ``seed 0, transform raw``),
    its config and, only for a run trained here, the config already resolved (never sent)."""

    index: int
    label: str
    detail: str
    config: RunConfig
    resolved: Any = None


@dataclass(frozen=True)
class Outcome:
    """A task's run directory, or the error that stopped it, and the warnings it raised."""

    index: int
    run_dir: str | None
    error: str | None = None
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0


class SweepFailed(FbenchError):
    """Some runs of a sweep failed (each with its error); the others completed and are stored,
    so running the sweep again trains only the failed ones. ``runs``: the completed runs."""

    def __init__(self, failures: Sequence[tuple[str, str]], runs: Sequence[Any] = ()) -> None:
        self.failures, self.runs = list(failures), list(runs)
        listed = "; ".join(f"{title}: {error}" for title, error in self.failures)
        super().__init__(f"{len(self.failures)} run(s) of the sweep failed ({listed}).",
                         "fix the cause and run it again: it trains only the failed runs.")


def describe_error(exc: BaseException) -> str:
    """One line for a failed run: fbench's message, else the exception and where it was raised."""
    if isinstance(exc, FbenchError):
        return str(exc)
    text = " ".join("".join(traceback.format_exception_only(type(exc), exc)).split())
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{text} (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else text


def run_task(index: int, config: dict[str, Any], threads: int | None = None,
             env: dict[str, str] | None = None) -> Outcome:
    """One task in a worker: resolve and train ``config`` (``RunConfig.to_dict()``) quietly on
    ``threads`` torch threads, with the sweep's ``FBENCH_*`` variables ``env`` (plugins, cache)."""
    global _TRAINING
    import torch
    from rich.console import Console

    from fbench.train import engine
    from fbench.train.config import RunConfig
    from fbench.train.resolve import resolve

    start = time.perf_counter()
    if _STOPPING:  # queued before the sweep was stopped
        return Outcome(index, None, NOT_STARTED)
    os.environ.update(env or {})
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    with warnings.catch_warnings(record=True) as caught:
        _TRAINING = True
        try:
            resolved = resolve(RunConfig.from_dict(config))
            quiet = Console(stderr=True, quiet=True)
            run_dir, error = engine.train_and_evaluate(resolved, quiet, progress=False), None
        except Exception as exc:  # noqa: BLE001 - a failed run is an outcome, not the end
            run_dir, error = None, describe_error(exc)
        except KeyboardInterrupt as exc:  # the run marked itself interrupted; say how far
            run_dir, error = None, f"interrupted: {exc}"
        finally:
            _TRAINING = False
    texts = tuple(dict.fromkeys(" ".join(str(w.message).split()) for w in caught))
    return Outcome(index, None if run_dir is None else str(run_dir), error, texts,
                   time.perf_counter() - start)


def run_here(task: Task, console: Console | None, progress: bool) -> Outcome:
    """Train ``task`` in this process, as ``fbench run`` does (its own progress bar, warnings
    raised where they happen). Ctrl-C and SIGTERM propagate; any other error is the outcome."""
    from fbench.train import engine  # looked up now: tests stand in for the training
    from fbench.train.resolve import resolve

    start = time.perf_counter()
    if console:
        console.print(f"[bold]{task.label}[/] ({task.detail}): training")
    try:
        resolved = task.resolved if task.resolved is not None else resolve(task.config)
        run_dir = engine.train_and_evaluate(resolved, console=console, progress=progress)
    except Exception as exc:  # noqa: BLE001 - a failed run is an outcome, not the end
        return Outcome(task.index, None, describe_error(exc),
                       seconds=time.perf_counter() - start)
    return Outcome(task.index, str(run_dir), seconds=time.perf_counter() - start)


def _outcome(index: int, result: Any) -> Outcome:
    """``result()``; a failed run when the worker itself died (memory, a lost node, time)."""
    try:
        return result()
    except Exception as exc:  # noqa: BLE001 - the engine's own error: that run failed
        return Outcome(index, None, describe_error(exc).splitlines()[0])


def _fbench_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("FBENCH_")}


def _require(module: str, what: str) -> None:
    import importlib.util  # find_spec: refused before any work, without importing it
    if importlib.util.find_spec(module) is None:
        raise FbenchError(f"the {what} executor needs {module.capitalize()}.", INSTALL)


class Executor:
    """Runs tasks, yielding their outcomes as they finish. ``in_process``: here (a task may
    carry its resolved config); ``parallel``: several at once (the caller draws one bar for
    the sweep); ``unfinished``: the indexes handed out and not yet yielded (what Ctrl-C stops)."""

    name: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()
    in_process = False
    parallel = True

    def __init__(self) -> None:
        self.unfinished: list[int] = []

    def run(self, tasks: Sequence[Task], console: Console | None = None,
            progress: bool = True) -> Iterator[Outcome]:  # pragma: no cover - abstract
        raise NotImplementedError


class LocalExecutor(Executor):
    """``jobs`` runs side by side in a pool of spawned processes (each with ``cores // jobs``
    torch threads); with ``jobs=1``, one after another in this process."""

    name, options = "local", ("jobs",)

    def __init__(self, jobs: int = 1) -> None:
        super().__init__()
        if int(jobs) < 1:
            raise FbenchError(f"--jobs must be at least 1, got {jobs}.")
        self.jobs = int(jobs)
        self.in_process, self.parallel = self.jobs == 1, self.jobs > 1

    def run(self, tasks: Sequence[Task], console: Console | None = None,
            progress: bool = True) -> Iterator[Outcome]:
        if self.jobs == 1:
            for task in tasks:
                self.unfinished = [task.index]
                yield run_here(task, console, progress)
            self.unfinished = []
            return
        yield from self._pool(tasks)

    def _pool(self, tasks: Sequence[Task]) -> Iterator[Outcome]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        # spawn: a fork of a process holding torch's threads (or CUDA) may deadlock
        ctx = multiprocessing.get_context("spawn")
        before = set(multiprocessing.active_children())
        pool = ProcessPoolExecutor(min(self.jobs, len(tasks)), mp_context=ctx,
                                   initializer=_child_init, initargs=(threads,))
        futures = {pool.submit(run_task, t.index, t.config.to_dict(), None, _fbench_env()):
                   t.index for t in tasks}
        workers = set(multiprocessing.active_children()) - before
        self.unfinished = [t.index for t in tasks]
        try:
            for future in as_completed(futures):
                self.unfinished.remove(futures[future])
                yield _outcome(futures[future], future.result)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            if self.unfinished:  # stopped early: the running runs unwind (marked interrupted)
                for proc in workers:
                    if proc.is_alive() and proc.pid is not None:
                        os.kill(proc.pid, signal.SIGINT)
            pool.shutdown(wait=True)


def _child_init(threads: int) -> None:
    """A pool worker: its torch threads; Ctrl-C or SIGTERM raised once, during a run, as
    KeyboardInterrupt (the run marks itself interrupted), then ignored while it unwinds (the
    terminal and the sweep both send one); an idle worker ends quietly at the pool's shutdown."""
    import torch
    torch.set_num_threads(threads)

    def stop(signum: int, frame: Any) -> None:
        global _STOPPING
        _STOPPING = True
        if not _TRAINING:
            return
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        exc = KeyboardInterrupt()
        exc.signum = signum  # type: ignore[attr-defined]
        raise exc

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


class RayExecutor(Executor):
    """Each run a Ray task with ``cpus_per_run`` CPUs (its torch threads) and ``gpus_per_run``
    GPUs, on the cluster at ``ray_address`` (or ``$RAY_ADDRESS``), on the Ray this process is
    already connected to, or else on a local Ray started for the sweep (``num_cpus`` CPUs)."""

    name = "ray"
    options = ("ray_address", "cpus_per_run", "gpus_per_run", "num_cpus")

    def __init__(self, ray_address: str | None = None, cpus_per_run: float = 1,
                 gpus_per_run: float = 0, num_cpus: int | None = None) -> None:
        super().__init__()
        _require("ray", "ray")
        self.address = ray_address or os.environ.get("RAY_ADDRESS") or None
        self.cpus, self.gpus, self.num_cpus = float(cpus_per_run), float(gpus_per_run), num_cpus

    def _connect(self, ray: Any) -> bool:
        """Connect to (or start) Ray; True when this sweep did, and so shuts it down. Started:
        address "local", a Ray of its own even where one runs (ray.init() joins it, then fails)."""
        if ray.is_initialized():
            return False
        where = ({"address": self.address} if self.address else {"address": "local",
                 "num_cpus": self.num_cpus or os.cpu_count(), "include_dashboard": False})
        try:
            ray.init(**where, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError as exc:
            raise FbenchError(f"cannot reach the Ray cluster at {self.address}: {exc}",
                              "start it (`ray start --head`) or check --ray-address / "
                              "RAY_ADDRESS.") from None
        return True

    def _check_resources(self, ray: Any) -> None:
        """A task asking for more than the cluster has would wait forever: refuse it."""
        have = ray.cluster_resources()
        for kind, want in (("CPU", self.cpus), ("GPU", self.gpus)):
            if want > have.get(kind, 0):
                raise FbenchError(f"each run asks for {want:g} {kind}(s), the Ray cluster has "
                                  f"{have.get(kind, 0):g}.", f"lower --{kind.lower()}s-per-run.")

    def run(self, tasks: Sequence[Task], console: Console | None = None,
            progress: bool = True) -> Iterator[Outcome]:
        import ray

        started = self._connect(ray)
        refs: dict[Any, int] = {}
        try:
            self._check_resources(ray)
            remote = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus)(run_task)
            env, threads = _fbench_env(), max(1, int(self.cpus))
            refs = {remote.remote(t.index, t.config.to_dict(), threads, env): t.index
                    for t in tasks}
            self.unfinished = [t.index for t in tasks]
            while refs:
                (ref,), _ = ray.wait(list(refs), num_returns=1)
                index = refs.pop(ref)
                self.unfinished.remove(index)
                yield _outcome(index, lambda r=ref: ray.get(r))
        finally:
            for ref in refs:  # stopped early: Ray raises KeyboardInterrupt inside each task
                ray.cancel(ref)
            if refs:
                ray.wait(list(refs), num_returns=len(refs), timeout=30)
            if started:
                ray.shutdown()


def slurm_minutes(text: str | int | None) -> int | None:
    """A time limit per run, ``90`` (minutes) or ``1:30:00``, in whole minutes."""
    try:
        parts = [int(p) for p in str(text).split(":")] if text is not None else []
        if len(parts) not in (0, 1, 3) or min(parts, default=0) < 0:
            raise ValueError
    except ValueError:
        raise FbenchError(f"--slurm-time {text!r} is not a time limit.",
                          "give minutes (90) or H:MM:SS (1:30:00).") from None
    if len(parts) < 3:
        return parts[0] if parts else None
    return max(1, parts[0] * 60 + parts[1] + (parts[2] > 0))


class SlurmExecutor(Executor):
    """Each run a SLURM job (one job array per sweep) through submitit: ``cpus_per_run`` CPUs,
    ``slurm_gpus`` (else ``gpus_per_run``) GPUs, job logs in ``slurm_folder`` (default
    ``<out>/.submitit``); ``slurm_cluster="local"``: submitit's local stand-in for SLURM."""

    name = "slurm"
    options = ("slurm_partition", "slurm_time", "slurm_gpus", "cpus_per_run", "gpus_per_run",
               "slurm_folder", "slurm_cluster", "poll_s")

    def __init__(self, slurm_partition: str | None = None, slurm_time: str | int | None = None,
                 slurm_gpus: int | None = None, cpus_per_run: float = 1,
                 gpus_per_run: float = 0, slurm_folder: str | Path | None = None,
                 slurm_cluster: str = "slurm", poll_s: float | None = None) -> None:
        super().__init__()
        import math
        import shutil

        _require("submitit", "slurm")
        if slurm_cluster == "slurm" and shutil.which("sbatch") is None:
            raise FbenchError("the slurm executor found no `sbatch` here.",
                              "run on a SLURM login node, or use --executor ray / local.")
        self.partition, self.minutes = slurm_partition, slurm_minutes(slurm_time)
        self.gpus = int(slurm_gpus if slurm_gpus is not None else math.ceil(gpus_per_run))
        self.cpus, self.folder = max(1, math.ceil(cpus_per_run)), slurm_folder
        self.cluster, self.poll_s = slurm_cluster, poll_s or (1 if slurm_cluster == "local" else 15)

    def _executor(self, out: str) -> Any:
        import submitit

        folder = Path(self.folder) if self.folder else Path(out) / ".submitit"
        ex = submitit.AutoExecutor(folder=folder / "%j", cluster=self.cluster)
        ex.update_parameters(name="fbench", cpus_per_task=self.cpus, gpus_per_node=self.gpus,
                             timeout_min=self.minutes, slurm_partition=self.partition)
        return ex  # (submitit takes None for "not set")

    def run(self, tasks: Sequence[Task], console: Console | None = None,
            progress: bool = True) -> Iterator[Outcome]:
        from submitit.helpers import as_completed

        if not tasks:
            return
        ex, env = self._executor(tasks[0].config.out), _fbench_env()
        with ex.batch():  # one job array: one sbatch for the whole sweep
            jobs = [ex.submit(run_task, t.index, t.config.to_dict(), self.cpus, env)
                    for t in tasks]
        index_of = {id(job): t.index for job, t in zip(jobs, tasks, strict=True)}
        self.unfinished = [t.index for t in tasks]
        try:
            for job in as_completed(jobs, poll_frequency=self.poll_s):
                self.unfinished.remove(index_of[id(job)])
                yield _outcome(index_of[id(job)], job.result)
        finally:
            for job in jobs:
                if index_of[id(job)] in self.unfinished:
                    job.cancel(check=False)


EXECUTORS: dict[str, type[Executor]] = {e.name: e for e in (LocalExecutor, RayExecutor,
                                                           SlurmExecutor)}


def make_executor(executor: str | Executor | None = "local", **options: Any) -> Executor:
    """The executor named ``local``, ``ray`` or ``slurm`` with ``options`` (None: its default),
    or ``executor`` itself when it is one. An option of another executor is refused by its
    flag's name (``--slurm-partition`` with ``--executor ray`` is a mistake)."""
    given = {k: v for k, v in options.items() if v is not None}
    if isinstance(executor, Executor) and not given:
        return executor
    name = executor or "local"
    kind = EXECUTORS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise FbenchError(f"no executor {name!r}.", f"use {', '.join(EXECUTORS)}.")
    wrong = sorted(set(given) - set(kind.options))
    if wrong:
        flags = ", ".join("--" + w.replace("_", "-") for w in wrong)
        takes = ", ".join("--" + o.replace("_", "-") for o in kind.options)
        raise FbenchError(f"{flags} does not apply to --executor {name}.",
                          f"--executor {name} takes {takes}.")
    return kind(**given)
