"""Run the speed benchmarks (``benchmarks/bench_*.py``) as subprocesses and collect their ratios.

Each script measures its ratios side by side in one process and prints them. When a script accepts
``--json PATH`` its machine-readable output is used as is; otherwise the printed ``name: 1.23x`` /
``name = 1.23x`` lines are parsed. A script that is not in the repo yet, or that fails, gives a row that
says so -- never a made-up number.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


@dataclass(frozen=True)
class SpeedBench:
    """One speed benchmark script and what it measures."""

    name: str
    script: str
    measures: str
    labels: tuple[tuple[str, str], ...] = ()  # readable names for terse keys of the script's JSON ratios


SPEED_BENCHES = (
    SpeedBench("supernet", "bench_supernet.py",
               "supernet at max arch vs its extracted static model (fwd+bwd); one sandwich step vs the sum of "
               "its four static subnets",
               (("a", "supernet fwd+bwd at max arch / extracted static model (target <= 1.05)"),
                ("b", "sandwich step / sum of its 4 static subnets' steps (target <= 1.10)"))),
    SpeedBench("precision", "bench_precision.py", "8-bit fake-quant W/A/G training step vs fp32"),
    SpeedBench("hwcost", "bench_hwcost.py", "hardware model subnets/s (its table: multiples of the 10,000 "
                                            "subnets/s target) and per-layer time vs SCALE-Sim's recorded times "
                                            "(x faster)"),
    SpeedBench("bn_calibration", "bench_bn_calibration.py", "BN recalibration + evaluation time per subnet"),
)

# repeats for scripts without --quick/--smoke (medians of fewer repeats: noisier, same meaning)
FEWER_REPEATS = {"smoke": 1, "quick": 5}

# "sandwich / static sum: 1.23x", "ratio = 0.97 x", "8-bit step / fp32 step 2.5x"
_NUMBER = r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?"
_RATIO = re.compile(rf"^\s*(?P<name>\w[^:=]*?)\s*[:=]?\s+(?P<value>{_NUMBER})\s*x\b", re.IGNORECASE)
# "... -> 12,345x (uncached) / 40,000x (cached) faster": each labelled ratio of one sentence
_LABELLED = re.compile(rf"(?P<value>{_NUMBER})\s*x\s*\((?P<label>[^)]+)\)", re.IGNORECASE)


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def parse_ratios(text: str) -> dict[str, float]:
    """``{name: value}`` for every printed ratio: table rows (first cell names the row, the last cell that is a
    number followed by ``x`` is the value), ``name: 1.23x`` lines, and ``N x (label)`` items of a sentence,
    named by the text before the sentence's first colon (on this or an earlier line: terminals wrap long
    sentences). ANSI colour codes are ignored."""
    found: dict[str, float] = {}
    prefix = "ratio"
    clean = re.sub(r"\x1b\[[0-9;]*m", "", text)
    for line in clean.splitlines():
        line = line.strip(" │┃|")
        cells = [c.strip() for c in re.split(r"\s*[│┃|]\s*", line) if c.strip()]
        if len(cells) >= 2:
            for cell in reversed(cells[1:]):
                m = re.fullmatch(rf"({_NUMBER})\s*x", cell, re.IGNORECASE)
                if m:
                    found[cells[0]] = _number(m.group(1))
                    break
            continue
        if ":" in line:
            prefix = line.split(":", 1)[0].strip()
        labelled = list(_LABELLED.finditer(line))
        if labelled:  # named by the sentence's start, which may sit on an earlier (wrapped) line
            for m in labelled:
                found[f"{prefix} ({m.group('label').strip()})"] = _number(m.group("value"))
            continue
        m = _RATIO.match(line)
        if m:
            found[m.group("name").strip()] = _number(m.group("value"))
    return found


def _options(path: Path) -> set[str]:
    """The ``--flags`` a script declares (read from its source: running ``--help`` would import torch)."""
    return set(re.findall(r"""["'](--[a-z][a-z0-9-]*)["']""", path.read_text()))


def _shown(path: Path) -> str:
    """A path relative to the repo when inside it (results are committed; absolute paths are machine noise)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def run_speed_bench(bench: SpeedBench, mode: str, log_dir: Path, timeout: float) -> dict[str, Any]:
    """Run one script in ``mode`` (smoke/quick/full) and return its status, ratios/data and the command."""
    path = BENCH_DIR / bench.script
    entry: dict[str, Any] = {"name": bench.name, "script": f"benchmarks/{bench.script}", "measures": bench.measures}
    if not path.is_file():
        return {**entry, "status": "not available yet", "reason": f"benchmarks/{bench.script} is not in the repo yet"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1))}
    flags = _options(path)
    args = [sys.executable, str(path)]
    if mode == "smoke" and "--smoke" in flags:
        args.append("--smoke")
    elif mode in ("smoke", "quick") and "--quick" in flags:
        args.append("--quick")
    elif mode in ("smoke", "quick") and "--repeats" in flags:  # no short mode: fewer repeats instead
        args += ["--repeats", str(FEWER_REPEATS[mode])]
    json_path = None
    if "--json" in flags:
        fd, tmp = tempfile.mkstemp(prefix=f"{bench.name}-", suffix=".json")
        os.close(fd)
        json_path = Path(tmp)
        args += ["--json", str(json_path)]
    entry["command"] = " ".join(["python", f"benchmarks/{bench.script}", *args[2:]]).replace(str(json_path), "OUT.json")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"speed_{bench.name}.log"
    start = time.perf_counter()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as err:
        log_path.write_text(f"{err.stdout or ''}\n{err.stderr or ''}")
        return {**entry, "status": "failed", "reason": f"timed out after {timeout:.0f} s (log: {log_path})"}
    entry["wall_s"] = time.perf_counter() - start
    log_path.write_text(f"$ {entry['command']}\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    entry["log"] = _shown(log_path)
    entry["stdout_tail"] = proc.stdout[-4000:]
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {**entry, "status": "failed", "reason": f"exit code {proc.returncode}: {last} (log: {log_path})"}
    if json_path is not None and json_path.is_file() and json_path.stat().st_size:
        try:
            entry["data"] = json.loads(json_path.read_text())
        except json.JSONDecodeError as err:
            return {**entry, "status": "failed", "reason": f"--json output is not JSON: {err}"}
        finally:
            json_path.unlink(missing_ok=True)
        entry["source"] = "json"
    else:
        entry["data"] = {"ratios": parse_ratios(proc.stdout)}
        entry["source"] = "parsed stdout"
    labels = dict(bench.labels)
    entry["ratios"] = {labels.get(k, k): v for k, v in extract_ratios(entry["data"]).items()}
    if not entry["ratios"]:
        return {**entry, "status": "failed", "reason": f"no ratios found in its output (log: {log_path})"}
    return {**entry, "status": "ok"}


def extract_ratios(data: Any, prefix: str = "") -> dict[str, float]:
    """The numbers a benchmark reports as ratios: its top-level ``ratios`` mapping when it has one, else every
    ``ratios`` mapping or ratio-named key (``*ratio*``, ``*speedup*``, ``*_x``, ``*per_s``) anywhere, flattened."""
    if not prefix and isinstance(data, dict) and isinstance(data.get("ratios"), dict):
        return {k: float(v) for k, v in data["ratios"].items() if isinstance(v, int | float)}
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            name = f"{prefix}{key}"
            if key == "ratios" and isinstance(value, dict):
                out.update({f"{prefix}{k}": float(v) for k, v in value.items() if isinstance(v, int | float)})
            elif isinstance(value, dict | list):
                out.update(extract_ratios(value, f"{name}."))
            elif isinstance(value, int | float) and not isinstance(value, bool) and re.search(
                    r"ratio|speedup|_x$|per_s$|slowdown|overhead", str(key), re.IGNORECASE):
                out[name] = float(value)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            label = item.get("name") if isinstance(item, dict) and isinstance(item.get("name"), str) else str(i)
            out.update(extract_ratios(item, f"{prefix}{label}."))
    return out


def run_speed_benches(mode: str, log_dir: Path, timeout: float, names: set[str] | None = None,
                      progress: Any = None) -> dict[str, dict[str, Any]]:
    """Every speed benchmark (or those in ``names``), one after another so they do not slow each other."""
    results = {}
    chosen = [b for b in SPEED_BENCHES if names is None or b.name in names]
    task = progress.add_task("speed benchmarks", total=len(chosen)) if progress is not None else None
    for bench in chosen:
        if progress is not None:
            progress.update(task, description=f"speed: {bench.script}")
        results[bench.name] = run_speed_bench(bench, mode, log_dir, timeout)
        if progress is not None:
            progress.advance(task)
    return results
