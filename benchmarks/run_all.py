"""Run every effnn benchmark: the speed ratios, then the six small-scale claim reproductions.

    python benchmarks/run_all.py            # full: 3 seeds, results in benchmarks/results/ (~40 min, 2 cores)
    python benchmarks/run_all.py --quick    # 1 seed, few epochs, <= 10 min on 2 cores -> benchmarks/results/quick/
    python benchmarks/run_all.py --smoke    # seconds per run: proves the machinery (tests)

Speed benchmarks run one after another, alone, as subprocesses (``benchmarks/bench_*.py``); then the
claims' training runs share the CPU cores (``--jobs``, one torch thread each). Writes ``speed_*.json``,
``claimN_*.json``, ``summary.json``, ``report.md`` and PNG plots to the output directory and prints the
tables. Exit code 1 if any benchmark or run failed ("not available yet" -- a recipe or script that is not
in the repo yet -- is not a failure).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
for _path in (BENCH_DIR, ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import report  # noqa: E402
import speed  # noqa: E402
from claims import CLAIMS, Budget, get_budget, run_claims  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402

from effnn.io import atomic_write_json, atomic_write_text  # noqa: E402

MODES = ("smoke", "quick", "full")
SPEED_TIMEOUT_S = {"smoke": 300, "quick": 300, "full": 1800}


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: cores, CPU model, memory, library versions, code revision."""
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gib": mem_gib, "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(), "git_commit": git("rev-parse", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "load_avg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="1 seed, few epochs: <= 10 minutes on 2 cores")
    mode.add_argument("--smoke", action="store_true", help="a few batches per run: checks the machinery only")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="training seeds (default: 0 for --quick/--smoke, 0 1 2 for the full run)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="training runs in parallel, one torch thread each when jobs >= cores (default: cores)")
    parser.add_argument("--only", default=None,
                        help="comma-separated subset: speed, claims, a speed benchmark name "
                             f"({', '.join(b.name for b in speed.SPEED_BENCHES)}) or a claim key "
                             f"({', '.join(CLAIMS)})")
    parser.add_argument("--out", type=Path, default=None,
                        help="results directory (default benchmarks/results, or benchmarks/results/MODE)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where training runs write (default OUT/.runs); kept for --resume")
    parser.add_argument("--resume", action="store_true",
                        help="reuse finished training runs in the work dir (default: retrain the runs the chosen "
                             "claims need; other stored runs are left alone)")
    parser.add_argument("--set", dest="budget_overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="change one field of the mode's budget, e.g. --set supernet_epochs=24 (repeatable; "
                             f"fields: {', '.join(f.name for f in dataclasses.fields(Budget) if f.name != 'name')})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: rebuild report.md, summary.json and the plots from the JSON in OUT")
    args = parser.parse_args(argv)
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    return args


def budget_with(budget: Budget, overrides: list[str]) -> Budget:
    """``budget`` with ``FIELD=VALUE`` overrides applied; its name records them (results say what ran)."""
    if not overrides:
        return budget
    fields = {f.name: f for f in dataclasses.fields(Budget) if f.name not in ("name", "default_seeds")}
    changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"error: --set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        try:
            changes[key] = None if value.lower() == "none" else int(value)
        except ValueError:
            raise SystemExit(f"error: --set {item!r}: {key} takes an integer (or none)") from None
    return dataclasses.replace(budget, name=f"{budget.name} ({', '.join(overrides)})", **changes)


def select(only: str | None) -> tuple[set[str], list[str]]:
    """(speed benchmark names, claim keys) chosen by ``--only``."""
    all_speed = {b.name for b in speed.SPEED_BENCHES}
    if not only:
        return all_speed, list(CLAIMS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in all_speed | set(CLAIMS) | {"speed", "claims"}]
    if unknown:
        raise SystemExit(f"error: unknown --only entries {unknown}; choose from speed, claims, "
                         f"{', '.join(sorted(all_speed))}, {', '.join(CLAIMS)}")
    speed_names = all_speed if "speed" in names else {n for n in names if n in all_speed}
    claim_keys = list(CLAIMS) if "claims" in names else [k for k in CLAIMS if k in names]
    return speed_names, claim_keys


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    budget = budget_with(get_budget(args.mode), args.budget_overrides)
    seeds = tuple(args.seeds) if args.seeds else budget.default_seeds
    # a changed budget never overwrites the reference results
    subdir = "custom" if args.budget_overrides else "" if args.mode == "full" else args.mode
    default_out = BENCH_DIR / "results" / subdir
    out = args.out or default_out
    work_dir = args.work_dir or out / ".runs"
    speed_names, claim_keys = (set(), []) if args.report_only else select(args.only)
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/run_all.py", *(sys.argv[1:] if argv is None else argv)])
    meta = {"mode": args.mode, "budget": budget.name, "command": command, "seeds": list(seeds), "jobs": args.jobs,
            "started": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine_info()}
    m = meta["machine"]
    console.print(f"[bold]effnn benchmarks[/bold] ({args.mode}, seeds {list(seeds)}, {args.jobs} jobs) on "
                  f"{m['nproc']} x {m['cpu']}, torch {m['torch']}; results -> {out}")
    start = time.perf_counter()

    speed_results: dict[str, dict[str, Any]] = {}
    if speed_names:
        with Progress(console=console, disable=args.no_progress, transient=True) as bar:
            speed_results = speed.run_speed_benches(args.mode, out / "logs", SPEED_TIMEOUT_S[args.mode],
                                                    speed_names, bar)
        for name, entry in speed_results.items():
            entry["mode"] = args.mode
            atomic_write_json(out / f"speed_{name}.json", entry)
            console.print(report.rich_table(f"Speed: {name} ({entry['measures']})", ["benchmark", "ratio", "value"],
                                            report.speed_rows(entry)))
        meta["speed_s"] = time.perf_counter() - start

    claim_results: dict[str, dict[str, Any]] = {}
    if claim_keys:
        claims_start = time.perf_counter()
        claim_results = run_claims(claim_keys, budget, seeds, args.jobs, work_dir, progress=not args.no_progress,
                                   fresh=not args.resume)
        meta["claims_s"] = time.perf_counter() - claims_start
        for key, entry in claim_results.items():
            atomic_write_json(out / f"claim{entry['claim']}_{key}.json", entry)
            table = report.claim_table(entry)
            if table is not None:
                console.print(table)
                console.print(f"  criterion: {entry['criterion']} -> [bold]{report.verdict(entry)}[/bold]")
            for note in entry.get("notes", []):
                console.print(f"  note: {note}")
            for failure in entry.get("failures", []):
                console.print(f"  [red]failed run[/red] {failure}")

    meta["wall_s"] = time.perf_counter() - start
    meta["machine_str"] = f"{m['nproc']} x {m['cpu']}, {m['mem_gib']} GiB, torch {m['torch']}, Python {m['python']}"
    # the report covers every benchmark of this mode in OUT: results of earlier --only runs are kept
    all_speed, all_claims = earlier_results(out, args.mode)
    all_speed.update(speed_results)
    all_claims.update(claim_results)
    all_claims = dict(sorted(all_claims.items(), key=lambda kv: kv[1]["claim"]))
    for key, entry in all_claims.items():
        plot = report.plot_claim(entry, out)
        if plot is not None and entry.get("plot") != plot.name:
            entry["plot"] = plot.name
            atomic_write_json(out / f"claim{entry['claim']}_{key}.json", entry)
    speed_plot = report.plot_speed(all_speed, out)
    invocations = [*earlier_invocations(out, args.mode, speed_names, claim_keys),
                   *([] if args.report_only else [meta])]
    summary = {"mode": args.mode, "invocations": invocations, "speed_plot": speed_plot.name if speed_plot else None,
               "rows": report.summary_rows(all_speed, all_claims)}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "report.md", report.markdown_report(invocations, all_speed, all_claims))
    console.print(report.summary_table(all_speed, all_claims))
    console.print(f"wall time {meta['wall_s'] / 60:.1f} min; results in {out}")
    bad = [e for e in (*speed_results.values(), *claim_results.values()) if e.get("status") in ("failed", "partial")]
    return 1 if bad else 0


def earlier_results(out: Path, mode: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Speed and claim results an earlier run of the same mode left in ``out``."""
    speed_results, claim_results = {}, {}
    for bench in speed.SPEED_BENCHES:
        path = out / f"speed_{bench.name}.json"
        if path.is_file():
            entry = json.loads(path.read_text())
            if entry.get("mode") == mode:
                speed_results[bench.name] = entry
    for claim in CLAIMS.values():
        path = out / f"claim{claim.number}_{claim.key}.json"
        if path.is_file():
            entry = json.loads(path.read_text())
            if entry.get("budget") == mode:
                claim_results[claim.key] = entry
    return speed_results, claim_results


def earlier_invocations(out: Path, mode: str, speed_names: set[str], claim_keys: list[str]) -> list[dict[str, Any]]:
    """The earlier invocations whose results the report still shows (same mode, not entirely redone now)."""
    path = out / "summary.json"
    if not path.is_file():
        return []
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError:
        return []
    if summary.get("mode") != mode:
        return []
    redone_all = speed_names == {b.name for b in speed.SPEED_BENCHES} and set(claim_keys) == set(CLAIMS)
    return [] if redone_all else list(summary.get("invocations", []))


if __name__ == "__main__":
    sys.exit(main())
