"""The training runs behind the claims: one composed config per (recipe, overrides, seed), run once, cached.

A claim lists the runs it needs as ``RunSpec`` values; ``run_specs`` de-duplicates them across claims (the
static 8-bit baseline serves CPT and FracTrain, one AlphaNet supernet serves three claims), runs them in a
pool of spawned worker processes through ``effnn.pipeline.train`` (what ``train.py`` does), and stores
each result as ``WORK_DIR/runs/KEY/result.json``. A result already on disk is reused, so an interrupted
benchmark resumes where it stopped. Each run's own output (Lightning's logs, rich tables) goes to
``WORK_DIR/runs/KEY/train.log`` instead of the terminal.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import shutil
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
RECIPES_DIR = ROOT / "recipes"
if str(ROOT) not in sys.path:  # a source checkout works without `pip install -e .`
    sys.path.insert(0, str(ROOT))

# Every benchmark run: no loggers, no progress bars, no best-checkpoint copies (nothing reads them).
QUIET_OVERRIDES = (
    "logger=none",
    "++callbacks.rich_progress_bar=null",
    "++callbacks.lr_monitor=null",
    "++callbacks.model_checkpoint=null",
    "++trainer.enable_progress_bar=false",
    "++trainer.enable_model_summary=false",
)
NO_CHECKPOINT_OVERRIDES = ("++callbacks.last_checkpoint=null", "++trainer.enable_checkpointing=false")


@dataclass(frozen=True)
class RunSpec:
    """One training run: ``train.py +recipe=RECIPE OVERRIDES seed=SEED``, then an optional measurement.

    ``measure`` names a function ``"module:function"`` (importable from ``benchmarks/``) called as
    ``fn(cfg, output_dir, **measure_args)`` after training; what it returns is stored under ``"measured"``.
    ``keep_checkpoint`` keeps ``last.ckpt`` for such measurements. ``weight`` is a rough relative cost, used
    only to start long runs first.
    """

    recipe: str
    overrides: tuple[str, ...] = ()
    seed: int = 0
    measure: str | None = None
    measure_args: tuple[tuple[str, Any], ...] = ()
    keep_checkpoint: bool = False
    weight: float = field(default=1.0, compare=False)

    @property
    def key(self) -> str:
        """A stable directory name: recipe, seed and a hash of everything that changes the result."""
        payload = json.dumps([self.recipe, list(self.overrides), self.seed, self.measure,
                              [list(kv) for kv in self.measure_args], self.keep_checkpoint], default=str)
        digest = hashlib.sha1(payload.encode()).hexdigest()[:10]
        return f"{self.recipe}-s{self.seed}-{digest}"

    def describe(self) -> str:
        extra = " ".join(self.overrides)
        return f"+recipe={self.recipe} seed={self.seed}" + (f" {extra}" if extra else "")


@dataclass
class RunResult:
    """What one run produced: final metrics, measurements, wall time, or the error that stopped it."""

    spec: RunSpec
    metrics: dict[str, float] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    error: str | None = None
    log_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def metric(self, name: str) -> float:
        """A logged metric; KeyError naming the metrics that do exist, so a renamed metric is obvious."""
        if name not in self.metrics:
            raise KeyError(f"run {self.spec.describe()} logged no {name!r}; it logged {sorted(self.metrics)}")
        return self.metrics[name]


def available_recipes() -> set[str]:
    return {p.stem for p in RECIPES_DIR.glob("*.yaml")}


def compose_run_config(spec: RunSpec, output_dir: Path) -> Any:
    """The config ``train.py`` would build for ``spec``, writing under ``output_dir``, with nothing shown."""
    from hydra import compose, initialize_config_dir

    from effnn.config import register_configs

    if spec.recipe not in available_recipes():
        raise ValueError(f"recipe {spec.recipe!r} does not exist (recipes/{spec.recipe}.yaml)")
    overrides = [f"recipe={spec.recipe}", *QUIET_OVERRIDES,
                 *(() if spec.keep_checkpoint else NO_CHECKPOINT_OVERRIDES),
                 f"paths.root_dir={ROOT}", f"paths.output_dir={output_dir}",
                 f"seed={spec.seed}", *spec.overrides]
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout/stderr (file descriptors too: C code, logging handlers) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:  # Python-level streams too: they need not be fd 1/2 (pytest's capture, notebooks)
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _resolve(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    if not name:
        raise ValueError(f"measure must be 'module:function', got {ref!r}")
    return getattr(importlib.import_module(module), name)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")


def execute(spec: RunSpec, work_dir: str) -> dict[str, Any]:
    """Train ``spec`` (or load its stored result) and return the result as a JSON-ready dict."""
    from effnn.io import atomic_write_json

    run_dir = Path(work_dir) / "runs" / spec.key
    result_path = run_dir / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "train.log"
    start, cpu_start = time.perf_counter(), time.process_time()
    with _output_to(log_path):
        print(f"# {spec.describe()}", flush=True)
        try:
            from effnn.pipeline import train

            cfg = compose_run_config(spec, run_dir)
            metrics = train(cfg)
            train_s = time.perf_counter() - start
            measured = _resolve(spec.measure)(cfg, run_dir, **dict(spec.measure_args)) if spec.measure else {}
        except BaseException:
            traceback.print_exc()  # into train.log, where the failure report points
            raise
    # cpu_s (this process's CPU time) estimates the wall time on an idle core when torch runs one thread
    result = {"metrics": metrics, "measured": measured, "wall_s": time.perf_counter() - start,
              "train_s": train_s, "cpu_s": time.process_time() - cpu_start, "log_path": str(log_path)}
    atomic_write_json(result_path, result)
    return result


def _to_result(spec: RunSpec, data: Mapping[str, Any]) -> RunResult:
    return RunResult(spec, dict(data.get("metrics", {})), dict(data.get("measured", {})),
                     float(data.get("wall_s", 0.0)), data.get("error"), data.get("log_path"))


def _failure(spec: RunSpec, work_dir: Path, err: BaseException) -> RunResult:
    log_path = work_dir / "runs" / spec.key / "train.log"
    detail = "".join(traceback.format_exception_only(type(err), err)).strip()
    return RunResult(spec, error=detail, log_path=str(log_path))


def run_specs(specs: Sequence[RunSpec], work_dir: Path, jobs: int = 1, threads: int | None = None,
              progress: bool = True, isolate: bool = True, fresh: bool = False) -> dict[RunSpec, RunResult]:
    """Run every distinct spec once in ``jobs`` worker processes; a failing run is recorded, not raised.

    Results already stored in ``work_dir`` are loaded without starting a worker, unless ``fresh``: then these
    specs' run directories are deleted and trained again (other runs in ``work_dir`` are untouched).
    ``threads`` is torch's thread count per worker (default: the CPU cores divided among the jobs).
    ``isolate=False`` runs the specs one by one in this process instead (no worker start-up; for tests and
    debuggers).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    unique = sorted(dict.fromkeys(specs), key=lambda s: -s.weight)
    work_dir.mkdir(parents=True, exist_ok=True)
    results: dict[RunSpec, RunResult] = {}
    todo = []
    for spec in unique:
        stored = work_dir / "runs" / spec.key / "result.json"
        if fresh:
            shutil.rmtree(stored.parent, ignore_errors=True)
        if stored.is_file():
            results[spec] = _to_result(spec, json.loads(stored.read_text()))
        else:
            todo.append(spec)
    if not todo:
        return results
    bar = _progress(progress)
    with bar:
        task = bar.add_task("training runs", total=len(todo))
        if not isolate:
            for spec in todo:
                try:
                    results[spec] = _to_result(spec, execute(spec, str(work_dir)))
                except Exception as err:  # noqa: BLE001 - one failed run must not stop the other claims
                    results[spec] = _failure(spec, work_dir, err)
                bar.advance(task)
            return results
        threads = threads or max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            futures: dict[Future, RunSpec] = {pool.submit(execute, s, str(work_dir)): s for s in todo}
            for future in as_completed(futures):
                spec = futures[future]
                try:
                    results[spec] = _to_result(spec, future.result())
                except Exception as err:  # noqa: BLE001 - one failed run must not stop the other claims
                    results[spec] = _failure(spec, work_dir, err)
                    bar.console.print(f"[red]run failed[/red] {spec.describe()}: {results[spec].error} "
                                      f"(log: {results[spec].log_path})")
                bar.advance(task)
    return results


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=not enabled, transient=False)


def summary_stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (None for one value) and the values themselves."""
    vals = [float(v) for v in values]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None,
            "n": len(vals), "values": vals}
