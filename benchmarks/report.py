"""Present benchmark results: rich tables for the terminal, Markdown tables, and one PNG plot per claim.

Input is the JSON-ready dicts ``run_all.py`` writes (speed entries from ``speed.py``, claim entries from
``claims.run_claims``); nothing here measures anything.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from effnn.io import atomic_write

STATUS_STYLE = {"ok": "green", "partial": "yellow", "not available yet": "dim", "failed": "red"}


def verdict(entry: Mapping[str, Any]) -> str:
    held = entry.get("held")
    return {True: "held", False: "did not hold", None: "-"}[held]


def rich_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right", overflow="fold")
    for row in rows:
        table.add_row(*[str(c) for c in row])
    return table


def claim_table(entry: Mapping[str, Any]) -> Table | None:
    if "table" not in entry:
        return None
    title = f"Claim {entry['claim']}: {entry['title']} ({entry['budget']}, seeds {entry['seeds']})"
    return rich_table(title, entry["table"]["columns"], entry["table"]["rows"])


def speed_rows(entry: Mapping[str, Any]) -> list[list[str]]:
    if entry.get("status") != "ok":
        return [[entry["name"], entry.get("status", "?"), entry.get("reason", "")]]
    return [[entry["name"], name, f"{value:.3g}"] for name, value in entry.get("ratios", {}).items()]


def summary_rows(speed: Mapping[str, Mapping[str, Any]], claims: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """One row per speed benchmark and per claim: status, headline, verdict."""
    rows = []
    for entry in speed.values():
        if entry.get("status") == "ok":
            shown = ", ".join(f"{k} {v:.3g}" for k, v in list(entry["ratios"].items())[:4])
        else:
            shown = entry.get("reason", "")
        rows.append([f"speed: {entry['name']}", entry.get("status", "?"), shown, ""])
    for entry in claims.values():
        shown = entry.get("headline") or entry.get("reason", "")
        rows.append([f"claim {entry['claim']}: {entry['key']}", entry.get("status", "?"), shown, verdict(entry)])
    return rows


def summary_table(speed: Mapping[str, Mapping[str, Any]], claims: Mapping[str, Mapping[str, Any]]) -> Table:
    table = Table(title="effnn benchmarks", title_justify="left")
    for col in ("benchmark", "status", "result", "claim"):
        table.add_column(col, overflow="fold")
    for row in summary_rows(speed, claims):
        table.add_row(row[0], f"[{STATUS_STYLE.get(row[1], 'white')}]{row[1]}[/]", row[2], row[3])
    return table


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(invocations: Sequence[Mapping[str, Any]], speed: Mapping[str, Mapping[str, Any]],
                    claims: Mapping[str, Mapping[str, Any]]) -> str:
    """All tables as Markdown (``results/report.md``), to read or paste into docs/benchmarks.md."""
    last = invocations[-1] if invocations else {}
    parts = [f"# effnn benchmark results ({last.get('mode')})", ""]
    for inv in invocations:
        machine = inv.get("machine", {})
        load = machine.get("load_avg_at_start")
        load_text = f", load average {' '.join(f'{x:.1f}' for x in load)}" if load else ""
        parts.append(f"- `{inv.get('command')}` at {inv.get('started')} (commit {machine.get('git_commit', '')[:10]}"
                     f"{load_text}): {inv.get('wall_s', 0) / 60:.1f} min on {inv.get('machine_str')}")
    parts += ["", "## Summary", "",
              markdown_table(["benchmark", "status", "result", "claim"], summary_rows(speed, claims)), "",
              "## Speed", ""]
    for entry in speed.values():
        parts += [f"### {entry['name']} (`{entry.get('command', entry['script'])}`)", "", entry["measures"], "",
                  markdown_table(["benchmark", "ratio", "value"], speed_rows(entry)), ""]
    parts += ["## Claims", ""]
    for entry in claims.values():
        parts += [f"### Claim {entry['claim']}: {entry['title']}", "", f"Published: {entry['published']}", ""]
        if "table" in entry:
            parts += [markdown_table(entry["table"]["columns"], entry["table"]["rows"]), "",
                      f"Criterion: {entry['criterion']} -> **{verdict(entry)}**", ""]
        else:
            parts += [f"{entry.get('status')}: {entry.get('reason', '')}", ""]
        for note in entry.get("notes", []):
            parts.append(f"- note: {note}")
        for failure in entry.get("failures", []):
            parts.append(f"- failed run: {failure}")
        if entry.get("notes") or entry.get("failures"):
            parts.append("")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------- plots

def _err(stats: Mapping[str, Any] | None) -> tuple[float, float]:
    if not stats or stats.get("mean") is None:
        return float("nan"), 0.0
    return stats["mean"], stats.get("std") or 0.0


def _bars(ax: Any, labels: Sequence[str], stats: Sequence[Mapping[str, Any] | None], ylabel: str,
          zoom: bool = True) -> None:
    means, errs = zip(*(_err(s) for s in stats))
    ax.bar(range(len(labels)), means, yerr=errs, capsize=4, color=[f"C{i}" for i in range(len(labels))])
    ax.set_xticks(range(len(labels)), labels, rotation=15, ha="right")
    ax.set_ylabel(ylabel)
    finite = [m - e for m, e in zip(means, errs) if m == m]
    if zoom and finite:
        ax.set_ylim(max(0.0, min(finite) - 5.0), min(100.0, max(m + e for m, e in zip(means, errs) if m == m) + 2))


def _plot_kd(entry: Mapping[str, Any], ax: Any) -> None:
    subnets = entry["data"]["subnets"]
    names = ("min", "mid_small", "mid_large")
    variants = [v for v in ("alpha", "kl", "none") if subnets.get(v)]
    width = 0.8 / max(1, len(variants))
    for i, v in enumerate(variants):
        means, errs = zip(*(_err(subnets[v].get(n, {}).get("acc")) for n in names))
        ax.bar([j + i * width for j in range(len(names))], means, width, yerr=errs, capsize=3,
               label={"alpha": "alpha-divergence", "kl": "KL", "none": "no KD"}[v])
    ax.set_xticks([j + width * (len(variants) - 1) / 2 for j in range(len(names))], names)
    ax.set_ylabel("test accuracy (%)")
    ax.legend()


def _plot_attentive(entry: Mapping[str, Any], ax: Any) -> None:
    for i, label in enumerate(("uniform", "attentive")):
        d = entry["data"][label]
        pts = [(e["mmacs"], e["acc"]["mean"]) for e in d["subnets"].values()]
        if not pts:
            continue
        ax.scatter(*zip(*pts), s=14, alpha=0.5, color=f"C{i}")
        front = d["front"]
        xs, ys = [], []
        for j, (c, a) in enumerate(front):
            xs += [c, front[j + 1][0] if j + 1 < len(front) else entry["data"]["cost_range_mmacs"][1]]
            ys += [a, a]
        ax.plot(xs, ys, color=f"C{i}", label=f"{label} (front score {d['front_area']['mean']:.1f})")
    ax.set_xlabel("MMACs")
    ax.set_ylabel("test accuracy (%)")
    ax.legend()


def _plot_standalone(entry: Mapping[str, Any], ax: Any) -> None:
    archs = entry["data"]["archs"]
    names = list(archs)
    for i, key in enumerate(("supernet", "standalone")):
        means, errs = zip(*(_err(archs[n][key]) for n in names))
        ax.bar([j + 0.4 * i for j in range(len(names))], means, 0.4, yerr=errs, capsize=3,
               label="from supernet (no fine-tuning)" if key == "supernet" else "trained alone")
    ax.set_xticks([j + 0.2 for j in range(len(names))], names)
    ax.set_ylabel("test accuracy (%)")
    ax.legend()


def _plot_cpt(entry: Mapping[str, Any], axes: Any) -> None:
    acc = entry["data"]["accuracy"]
    _bars(axes[0], ["fp32", "static 8/8", "CPT 3-8/8"], [acc["fp32"], acc["static8"], acc["cpt"]],
          "test accuracy (%)")
    expected = entry["data"]["expected_saving_pct"]
    axes[1].bar([0, 1, 2], [_err(entry["data"]["saving_pct"])[0], sum(expected) / max(1, len(expected)),
                            entry["data"]["expected_saving_full_schedule_pct"]], color=["C2", "C7", "C8"])
    axes[1].set_xticks([0, 1, 2], ["measured", "formula, this run", "formula, paper run"], rotation=15, ha="right")
    axes[1].set_ylabel("BitOPs saving vs static 8/8 (%)")


def _plot_fractrain(entry: Mapping[str, Any], axes: Any) -> None:
    acc, cost = entry["data"]["accuracy"], entry["data"]["rel_cost_pct"]
    _bars(axes[0], ["fp32", "static 8/8", "PFQ", "DFQ"], [acc["fp32"], acc["static8"], acc["pfq"], acc["dfq"]],
          "test accuracy (%)")
    _bars(axes[1], ["static 8/8", "PFQ", "DFQ"], [{"mean": 100.0, "std": 0.0}, cost["pfq"], cost["dfq"]],
          "training cost vs static 8/8 (%)", zoom=False)


def _plot_smartdeal(entry: Mapping[str, Any], axes: Any) -> None:
    d = entry["data"]
    _bars(axes[0], ["dense", "dense @ conversion", "SD after fit", "SD fine-tuned"],
          [d["accuracy_dense"], d["accuracy_at_conversion"], d["accuracy_after_fit"], d["accuracy_smartdeal"]],
          "test accuracy (%)")
    _bars(axes[1], ["dense fp32", "SmartDeal"], [d["dense_weight_kib"], d["weight_kib"]], "weight storage (KiB)",
          zoom=False)
    ratio = d["storage_ratio"].get("mean")
    if ratio:
        axes[1].set_title(f"{ratio:.2f}x smaller")


PLOTTERS = {"kd": (1, _plot_kd), "attentive": (1, _plot_attentive), "standalone": (1, _plot_standalone),
            "cpt": (2, _plot_cpt), "fractrain": (2, _plot_fractrain), "smartdeal": (2, _plot_smartdeal)}


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path


def plot_claim(entry: Mapping[str, Any], out_dir: Path) -> Path | None:
    """``claimN_KEY.png`` for a claim with data; None when there is nothing to plot."""
    if entry.get("key") not in PLOTTERS or "data" not in entry:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels, plotter = PLOTTERS[entry["key"]]
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2))
    try:
        plotter(entry, axes)
        fig.suptitle(f"Claim {entry['claim']}: {entry['title']}\n({entry['budget']}, seeds {entry['seeds']})",
                     fontsize=10)
        fig.tight_layout()
        return _save(fig, out_dir / f"claim{entry['claim']}_{entry['key']}.png")
    finally:
        plt.close(fig)


def plot_speed(speed: Mapping[str, Mapping[str, Any]], out_dir: Path) -> Path | None:
    """Horizontal bars of every speed ratio (rates such as subnets/s are left to the tables)."""
    items = [(f"{e['name']}: {k}", v) for e in speed.values() if e.get("status") == "ok"
             for k, v in e["ratios"].items() if "per_s" not in k and "/s" not in k]
    if not items:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.45 * len(items) + 1.2))
    try:
        labels, values = zip(*items)
        ax.barh(range(len(items)), values, color="C0")  # no good/bad colours: some ratios are better high
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")  # ratios span 0.05x .. 1e5x
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:.3g}", va="center", fontsize=8)
        ax.set_yticks(range(len(items)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("ratio (x, log scale; 1 = parity)")
        ax.set_title("effnn speed ratios (median of repeats, measured side by side)")
        fig.tight_layout()
        return _save(fig, out_dir / "speed_ratios.png")
    finally:
        plt.close(fig)
