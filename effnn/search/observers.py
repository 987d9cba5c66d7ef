"""Search observers: a rich progress bar over generations and evaluations, TensorBoard scalars, and a fault
injector for kill-and-resume tests."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from effnn.search.evolution import EvolutionarySearch, GenerationSummary, SearchObserver


class ObserverGroup(SearchObserver):
    """Forwards every hook to each observer in turn."""

    def __init__(self, *observers: SearchObserver) -> None:
        self.observers = observers

    def on_search_start(self, first_generation: int, last_generation: int) -> None:
        for o in self.observers:
            o.on_search_start(first_generation, last_generation)

    def on_evaluations_start(self, generation: int, count: int) -> None:
        for o in self.observers:
            o.on_evaluations_start(generation, count)

    def on_evaluation_done(self, generation: int, done: int) -> None:
        for o in self.observers:
            o.on_evaluation_done(generation, done)

    def on_generation_end(self, summary: GenerationSummary, search: EvolutionarySearch) -> None:
        for o in self.observers:
            o.on_generation_end(summary, search)


class RichProgress(SearchObserver):
    """Two bars: generations done, and this rank's evaluations in the current generation."""

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(TextColumn("{task.description:<11}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                 console=console, transient=False)
        self._gen: TaskID | None = None
        self._eval: TaskID | None = None

    def on_search_start(self, first_generation: int, last_generation: int) -> None:
        self.progress.start()
        total = last_generation + 1
        self._gen = self.progress.add_task("generations", total=total, completed=first_generation, info="")
        self._eval = self.progress.add_task("evaluations", total=0, info="")

    def on_evaluations_start(self, generation: int, count: int) -> None:
        self.progress.reset(self._eval, total=count, completed=0, info=f"gen {generation}")

    def on_evaluation_done(self, generation: int, done: int) -> None:
        self.progress.update(self._eval, completed=done)

    def on_generation_end(self, summary: GenerationSummary, search: EvolutionarySearch) -> None:
        self.progress.update(self._gen, completed=summary.generation + 1,
                             info=f"best acc {summary.best_acc:.1f}%, archive {summary.archive_size}")

    def close(self) -> None:
        if self.progress.live.is_started:
            self.progress.stop()


class TensorBoardScalars(SearchObserver):
    """``search/*`` scalars per generation; ``add_figure`` puts the final Pareto plot next to them."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self.writer: Any = None

    def on_search_start(self, first_generation: int, last_generation: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events of generations a killed run logged but did not save
        self.writer = SummaryWriter(str(self.log_dir), purge_step=first_generation or None)

    def on_generation_end(self, summary: GenerationSummary, search: EvolutionarySearch) -> None:
        step = summary.generation
        self.writer.add_scalar("search/best_acc", summary.best_acc, step)
        self.writer.add_scalar("search/archive_size", summary.archive_size, step)
        self.writer.add_scalar("search/evaluations", summary.evaluations, step)
        for name, value in summary.min_costs.items():
            self.writer.add_scalar(f"search/min_{name}", value, step)
        self.writer.flush()

    def add_figure(self, figure: Any, step: int) -> None:
        if self.writer is not None:
            self.writer.add_figure("search/pareto", figure, step, close=False)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class KillAtGeneration(SearchObserver):
    """SIGKILL the search process right after generation ``generation`` is saved (no cleanup, like an OOM kill
    or a preempted node), so a test can resume from what is on disk without sleeps or polling. Enable with
    ``+observers.kill._target_=effnn.search.observers.KillAtGeneration +observers.kill.generation=N``."""

    def __init__(self, generation: int) -> None:
        if generation < 0:
            raise ValueError(f"generation={generation} must be >= 0")
        self.generation = generation

    def on_generation_end(self, summary: GenerationSummary, search: EvolutionarySearch) -> None:
        if summary.generation >= self.generation:
            os.kill(os.getpid(), signal.SIGKILL)
