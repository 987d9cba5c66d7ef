"""The files a search leaves in its output directory: ``pareto.csv``, ``archs/*.yaml`` and ``pareto.png``.

All are written atomically (a killed search never leaves a half-written file) and are rewritten from the
full search state, so a resumed search produces the same files as an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from effnn.io import atomic_directory, atomic_write, atomic_write_text
from effnn.search.candidate import Candidate
from effnn.search.hardware import Accelerator
from effnn.search.pareto import Objective

ARCH_FILE_PREFIX = "pareto_"

#: Axis labels with units (the energy unit is the energy table's, MAC-normalised by default).
AXIS_LABELS = {
    "acc": "top-1 accuracy (%)", "macs": "MACs (millions)", "params": "parameters (millions)",
    "latency_ms": "latency (ms)", "energy": "energy (uJ)", "edp": "energy x delay (uJ x ms)",
    "area_mm2": "area (mm^2)", "power_mw": "average power (mW)",
}
_SCALE = {"macs": 1e-6, "params": 1e-6}

BestHardware = Mapping[Candidate, tuple[Accelerator, Mapping[str, float]]]


def _columns(entries: Sequence[tuple[Candidate, Mapping[str, float]]]) -> list[str]:
    names: list[str] = []
    for _, metrics in entries:
        names += [k for k in metrics if k not in names]
    return ["acc"] + [n for n in names if n != "acc"]


def pareto_rows(entries: Sequence[tuple[Candidate, Mapping[str, float]]],
                best_hardware: BestHardware | None = None) -> list[dict[str, Any]]:
    """One dict per Pareto point: name, every metric, the arch, its bits (when searched, with the widest
    weight/activation bits) and accelerators (as JSON, plus its PE type and mapping as columns)."""
    columns = _columns(entries)
    rows = []
    for i, (cand, metrics) in enumerate(entries):
        row: dict[str, Any] = {"name": f"{ARCH_FILE_PREFIX}{i:03d}"}
        row.update({c: metrics.get(c, "") for c in columns})
        row["arch"] = cand.arch_json()
        if cand.bits is not None:
            row["bits"] = cand.bits_json()
            row["max_weight_bits"], row["max_act_bits"] = max(cand.bits.weight), max(cand.bits.act)
        if cand.hardware is not None:
            row["hardware"] = json.dumps(cand.hardware.to_dict(), separators=(",", ":"))
            row["pe_type"], row["mapping"] = cand.hardware.pe_type, cand.hardware.mapping
        if best_hardware is not None and cand in best_hardware:
            acc, hw_metrics = best_hardware[cand]
            row["best_hardware"] = json.dumps(acc.to_dict(), separators=(",", ":"))
            row.update({f"best_hardware_{k}": v for k, v in hw_metrics.items()})
        rows.append(row)
    return rows


def write_pareto_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header or ["name", "acc", "arch"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def write_arch_files(directory: str | Path, entries: Sequence[tuple[Candidate, Mapping[str, float]]],
                     best_hardware: BestHardware | None = None) -> list[Path]:
    """``archs/pareto_NNN.yaml`` (same order and names as ``pareto.csv``): the arch under AlphaNet's keys,
    loadable by ``tools/export.py arch=``, plus its ``bits`` (when searched), metrics and accelerators (with PE
    type and mapping). The directory is replaced as a
    whole (files of an earlier, larger front never survive, a kill never leaves a mix)."""
    directory = Path(directory)
    with atomic_directory(directory, "arch files", overwrite=True) as tmp:  # never old and new files mixed
        for i, (cand, metrics) in enumerate(entries):
            data: dict[str, Any] = cand.arch.to_dict()
            if cand.bits is not None:
                data["bits"] = cand.bits.to_dict()
            data["metrics"] = {k: float(v) for k, v in metrics.items()}
            if cand.hardware is not None:
                data["hardware"] = cand.hardware.to_dict()
            if best_hardware is not None and cand in best_hardware:
                acc, hw_metrics = best_hardware[cand]
                data["best_hardware"] = {**acc.to_dict(), "metrics": {k: float(v) for k, v in hw_metrics.items()}}
            atomic_write_text(tmp / f"{ARCH_FILE_PREFIX}{i:03d}.yaml", yaml.safe_dump(data, sort_keys=False))
    return [directory / f"{ARCH_FILE_PREFIX}{i:03d}.yaml" for i in range(len(entries))]


def pareto_figure(evaluations: Mapping[Candidate, Mapping[str, float]],
                  entries: Sequence[tuple[Candidate, Mapping[str, float]]], objectives: Sequence[Objective]):
    """A matplotlib Figure: accuracy against each cost objective, all evaluations and the Pareto front."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    costs = [o.name for o in objectives if not o.maximize]
    fig, axes = plt.subplots(1, len(costs), figsize=(5.2 * len(costs), 4.2), squeeze=False)
    for ax, name in zip(axes[0], costs):
        scale = _SCALE.get(name, 1.0)
        xs = [m[name] * scale for m in evaluations.values()]
        ys = [m["acc"] for m in evaluations.values()]
        ax.scatter(xs, ys, s=14, color="0.7", label=f"evaluated ({len(xs)})")
        front = sorted((m[name] * scale, m["acc"]) for _, m in entries)
        ax.scatter([p[0] for p in front], [p[1] for p in front], s=30, color="C3", zorder=3,
                   label=f"Pareto archive ({len(front)})")
        if len(costs) == 1:
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="C3", lw=1.2)
        ax.set_xlabel(AXIS_LABELS.get(name, name))
        ax.set_ylabel(AXIS_LABELS["acc"])
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("accuracy vs cost" + ("" if len(costs) == 1 else " (archive over all objectives)"))
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))
