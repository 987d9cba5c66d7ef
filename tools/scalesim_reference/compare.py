"""effnn's systolic model against the SCALE-Sim reference records: the per-metric match table.

Usage: ``python tools/scalesim_reference/compare.py [--data tests/data/scalesim/generated.json]
[--markdown] [--show METRIC]``. Prints, per metric, how many records effnn reproduces exactly and the
worst relative error, split by regime (CALC with operands that fit, CALC with a spilling operand, USER
bandwidth). ``docs/hardware.md`` quotes its ``--markdown`` output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from effnn.hw.scalesim import METRIC_PAIRS, reference_regime, scalesim_metrics, simulate_reference_record

ROOT = Path(__file__).resolve().parents[2]

DEFAULT = ROOT / "tests" / "data" / "scalesim" / "generated.json"


def compare(records: list[dict]) -> dict[str, dict[str, list[tuple[str, float, float]]]]:
    """{regime: {metric: [(record id, effnn, SCALE-Sim), ...]}} over all records."""
    table: dict[str, dict[str, list[tuple[str, float, float]]]] = {}
    for record in records:
        ours = simulate_reference_record(record)
        ref = scalesim_metrics(record)
        regime = reference_regime(record)
        for metric in METRIC_PAIRS:
            table.setdefault(regime, {}).setdefault(metric, []).append((record["id"], ours[metric], ref[metric]))
    return table


def _exact(ours: float, ref: float, metric: str) -> bool:
    tol = 1e-3 if metric in ("overall_util", "mapping_efficiency", "compute_util") else 0.0
    return abs(ours - ref) <= tol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT)
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--show", default="", help="list the mismatching records of this metric")
    args = parser.parse_args()
    records = json.loads(args.data.read_text())["records"]
    table = compare(records)
    regimes = sorted(table)
    if args.markdown:
        print("| metric | " + " | ".join(f"{r} ({len(table[r]['total_cycles'])})" for r in regimes) + " |")
        print("|---|" + "---|" * len(regimes))
    for metric in METRIC_PAIRS:
        cells = []
        for regime in regimes:
            rows = table[regime][metric]
            exact = sum(_exact(o, r, metric) for _, o, r in rows)
            worst = max(abs(o - r) / max(abs(r), 1) for _, o, r in rows)
            cells.append(f"{exact}/{len(rows)} exact, worst {100 * worst:.2f}%")
        print(("| " + metric + " | " + " | ".join(cells) + " |") if args.markdown
              else f"{metric:28s} " + " | ".join(f"{r}: {c}" for r, c in zip(regimes, cells)))
    if args.show:
        for regime in regimes:
            for rid, o, r in table[regime][args.show]:
                if not _exact(o, r, args.show):
                    print(f"  {regime:10s} {rid:40s} effnn {o:12.3f}  SCALE-Sim {r:12.3f}")


if __name__ == "__main__":
    main()
