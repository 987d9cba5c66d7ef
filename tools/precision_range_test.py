"""Precision range test (CPT): find q_min for a recipe's model and data.

    python tools/precision_range_test.py +recipe=cpt [+prt.steps_per_bit=20] [+prt.start_bits=2]
        [+prt.max_bits=8] [+prt.grad_bits=8] [+prt.min_gain=0.05]

Trains the recipe's model from scratch while raising the forward precision one bit every
``steps_per_bit`` steps, prints the training accuracy per precision and q_min (the first precision at
which accuracy clearly improves), and writes ``prt.png`` and ``prt.json`` to the run directory. The
recipe's own callbacks are not used; its ``quantization`` settings (layers kept full precision) are.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from effnn.cli import hydra_app
from effnn.errors import ConfigError

if TYPE_CHECKING:
    from effnn.precision.range_test import RangeTestResult

PRT_DEFAULTS = {"start_bits": 2, "max_bits": 8, "steps_per_bit": 20, "grad_bits": 8, "min_gain": 0.05}


def prt_options(cfg: DictConfig) -> dict[str, Any]:
    """The ``prt.*`` options over their defaults; unknown keys are an error naming the known ones."""
    node = cfg.get("prt")
    # without any +prt.* option there is no prt node: to_container({}) would raise "not an OmegaConf config"
    given = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    if not isinstance(given, dict):
        raise ConfigError(f"prt must be a set of options (+prt.steps_per_bit=20 ...), got {given!r}")
    unknown = sorted(set(given) - set(PRT_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown precision range test option(s) {unknown}; known: {sorted(PRT_DEFAULTS)}")
    return {**PRT_DEFAULTS, **given}


def recipe_quantization(cfg: DictConfig) -> dict[str, Any] | None:
    """The ``quantization`` block of the recipe's precision callback, if it has one."""
    for entry in (cfg.get("callbacks") or {}).values():
        if isinstance(entry, DictConfig) and entry.get("quantization") is not None:
            return OmegaConf.to_container(entry.quantization, resolve=True)  # type: ignore[return-value]
    return None


def plot(result: RangeTestResult, path: Path) -> None:
    """Training accuracy per step (raw and smoothed) with the precision schedule and q_min marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from effnn.io import atomic_write

    steps = list(range(len(result.accuracy)))
    window = max(1, len(steps) // 40)
    smooth = [sum(result.accuracy[max(0, i - window + 1):i + 1]) / len(result.accuracy[max(0, i - window + 1):i + 1])
              for i in steps]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, result.accuracy, color="0.8", lw=0.8, label="train accuracy (step)")
    ax.plot(steps, smooth, color="C0", lw=1.8, label=f"train accuracy ({window}-step mean)")
    if result.baseline is not None:
        ax.axhline(result.baseline, color="0.5", ls=":", lw=1, label="baseline")
    ax.set_xlabel("step")
    ax.set_ylabel("training accuracy")
    ax2 = ax.twinx()
    ax2.step(steps, result.bits, where="post", color="C1", lw=1.5, label="forward bits")
    ax2.set_ylabel("forward bits")
    if result.q_min is not None:
        first = result.bits.index(result.q_min)
        ax.axvline(first, color="C3", ls="--", lw=1.2, label=f"q_min = {result.q_min}")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8)
    ax.set_title("precision range test")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def run(cfg: DictConfig) -> RangeTestResult:
    """Build data and model from ``cfg``, run the range test, print and write its results."""
    options = prt_options(cfg)  # before the heavy imports: a typo fails in a second
    import lightning as L
    from lightning.pytorch.callbacks import RichProgressBar
    from rich.console import Console
    from rich.table import Table

    from effnn.io import atomic_write_json
    from effnn.precision.range_test import PrecisionRangeTest

    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = hydra.utils.instantiate(cfg.data)
    module = hydra.utils.instantiate(cfg.model)
    prt = PrecisionRangeTest(quantization=recipe_quantization(cfg), **options)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(trainer_cfg, dict)
    for key in ("max_epochs", "min_epochs", "max_steps", "check_val_every_n_epoch", "val_check_interval"):
        trainer_cfg.pop(key, None)
    trainer = hydra.utils.instantiate(trainer_cfg, max_steps=prt.total_steps, max_epochs=-1,
                                      limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                                      enable_checkpointing=False, enable_model_summary=False,
                                      callbacks=[prt, RichProgressBar()])
    trainer.fit(module, datamodule=datamodule)
    result = prt.result

    out = Path(cfg.paths.output_dir)
    atomic_write_json(out / "prt.json", {"options": options, **result.as_dict()})
    plot(result, out / "prt.png")
    if trainer.is_global_zero:
        table = Table(title="precision range test")
        table.add_column("forward bits", justify="right")
        table.add_column("train accuracy (2nd half)", justify="right")
        for bits, acc in sorted(result.level_accuracy.items()):
            table.add_row(str(bits), f"{acc:.3f}", style="bold" if bits == result.q_min else None)
        console = Console()
        console.print(table)
        if result.q_min is None:
            console.print(f"no precision beat the baseline {result.baseline:.3f} by {options['min_gain']}: "
                          f"raise +prt.max_bits or +prt.steps_per_bit")
        else:
            console.print(f"q_min = {result.q_min} (baseline accuracy {result.baseline:.3f})")
        console.print(f"wrote {out / 'prt.png'} and {out / 'prt.json'}")
        print(json.dumps({"q_min": result.q_min}))
    return result


def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ValueError as err:  # bit-widths and schedule options are validated with ValueError
        raise ConfigError(str(err)) from err


if __name__ == "__main__":
    hydra_app(Path(__file__).resolve().parents[1] / "conf", "config", main,
              "python tools/precision_range_test.py +recipe=cpt [+prt.steps_per_bit=20] ...")
