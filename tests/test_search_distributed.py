"""Distributed candidate evaluation: the work split, and a real 2-process gloo search on the CPU.

Run as a script (``python tests/test_search_distributed.py CKPT OUT DEVICES``), this file is also the
program the 2-process test launches: Lightning Fabric starts the second rank, each rank runs the search
from ``conf/search.yaml`` and writes what it found to ``OUT/rank{R}.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEARCH_OVERRIDES = ["data.resolution=16", "search.population=6", "search.generations=2", "search.parents=3",
                    "search.num_mutations=3", "search.num_crossovers=3", "search.calibration.batches=2",
                    "progress=false", "tensorboard=false"]


def test_shares_partition_the_candidates() -> None:
    from effnn.search import Ranks

    for world in range(1, 5):
        for n in (0, 1, 7, 12):
            shares = [Ranks(r, world).share(n) for r in range(world)]
            flat = sorted(i for s in shares for i in s)
            assert flat == list(range(n))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_single_rank_map_is_a_plain_map() -> None:
    from effnn.search import Ranks, map_over_ranks

    done = []
    assert map_over_ranks(lambda x: x * x, [3, 1, 2], Ranks(), on_done=done.append) == [9, 1, 4]
    assert done == [1, 2, 3]


def _run(ckpt: str, out: str, devices: int) -> None:
    """One rank's work when this file runs as a script."""
    sys.path.insert(0, str(ROOT))
    from hydra import compose, initialize_config_dir

    from effnn.search.app import run_search

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("search", overrides=[f"ckpt={ckpt}", f"out={out}", f"devices={devices}", *SEARCH_OVERRIDES])
    result = run_search(cfg)
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    found = {"evaluations": [[c.to_dict(), m] for c, m in result.evaluations.items()],
             "pareto": [[c.to_dict(), m] for c, m in result.pareto()]}
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(found))


@pytest.mark.slow
def test_two_process_search_matches_single_process(tmp_path: Path) -> None:
    from conftest import run_cli
    from search_support import write_checkpoint

    ckpt = write_checkpoint(tmp_path / "last.ckpt")
    runs = {}
    for devices in (2, 1):
        out = tmp_path / f"out{devices}"
        proc = run_cli([str(Path(__file__)), str(ckpt), str(out), str(devices)], timeout=600,
                       env={"OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[devices] = {p.name: json.loads(p.read_text()) for p in out.glob("rank*.json")}
    assert sorted(runs[2]) == ["rank0.json", "rank1.json"]
    assert runs[2]["rank0.json"] == runs[2]["rank1.json"]  # both ranks searched the same archs
    assert runs[2]["rank0.json"] == runs[1]["rank0.json"]  # and the same as one process
    assert (tmp_path / "out2" / "pareto.csv").read_text() == (tmp_path / "out1" / "pareto.csv").read_text()


if __name__ == "__main__":
    _run(sys.argv[1], sys.argv[2], int(sys.argv[3]))
