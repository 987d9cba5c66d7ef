"""Supernet training under DDP on CPU (2 processes, gloo): same archs on both ranks, one gradient sync per
step, identical weights afterwards."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from lightning.pytorch.strategies import DDPStrategy

from effnn.errors import ConfigError
from effnn.lit.supernet import check_ddp_strategy
from tests.conftest import run_cli

WORKER = r'''
"""Trains a tiny32 supernet with attentive sampling for a few steps; every rank writes what it saw."""
import hashlib
import json
import sys
from functools import partial

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from effnn.data import DigitsDataModule
from effnn.lit.supernet import SupernetModule

torch.set_num_threads(1)
REDUCED_BUCKETS = []


def counting_allreduce(state, bucket):
    REDUCED_BUCKETS.append(bucket.index())
    return allreduce_hook(state, bucket)


class Record(Callback):
    def __init__(self):
        self.steps = []

    def on_train_start(self, trainer, module):
        trainer.strategy.model.register_comm_hook(None, counting_allreduce)  # Lightning does so only on CUDA

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append({"archs": [a.to_dict() for a in module.last_archs],
                           "local_scores": module.last_local_scores,
                           "buckets": list(REDUCED_BUCKETS)})
        REDUCED_BUCKETS.clear()

    def on_train_end(self, trainer, module):
        flat = torch.cat([p.detach().flatten() for p in module.net.parameters()])
        digest = hashlib.sha256(flat.numpy().tobytes()).hexdigest()
        with open(f"{sys.argv[1]}/rank{trainer.global_rank}.json", "w") as f:
            json.dump({"steps": self.steps, "params_sha256": digest,
                       "val_acc_max": float(trainer.callback_metrics["val/acc_max"])}, f)


if __name__ == "__main__":
    L.seed_everything(0)
    module = SupernetModule(optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9), num_classes=10,
                            sampler={"kind": "attentive", "k": 3, "num_middle": 2, "num_bins": 8,
                                     "prior_samples": 200, "seed": 3},
                            bn_calibration_batches=2, channels_last=False)
    strategy = DDPStrategy(process_group_backend="gloo", find_unused_parameters=True)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_epochs=1, limit_train_batches=5,
                        limit_val_batches=2, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()])
    trainer.fit(module, DigitsDataModule(batch_size=32, resolution=32))
'''


@pytest.mark.slow
def test_ddp_ranks_train_identical_archs_with_one_sync_per_step(tmp_path: Path) -> None:
    script = tmp_path / "ddp_worker.py"
    script.write_text(WORKER)
    res = run_cli([str(script), str(tmp_path)], env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    steps0, steps1 = ranks[0]["steps"], ranks[1]["steps"]
    assert len(steps0) == len(steps1) == 5
    for s0, s1 in zip(steps0, steps1):
        assert s0["archs"] == s1["archs"]  # identical archs on both ranks, every step
        assert len(s0["archs"]) == 4
        # each rank scored 2 x 3 attentive candidates on its own data shard
        assert len(s0["local_scores"]) == 2 and all(len(s) == 3 for s in s0["local_scores"])
        # four backward passes, yet every gradient bucket was all-reduced exactly once: only the last synced
        counts = Counter(s0["buckets"])
        assert counts and set(counts.values()) == {1}, counts
    # the shards differ, so the ranks' own scores differ: agreement comes from averaging them
    assert any(s0["local_scores"] != s1["local_scores"] for s0, s1 in zip(steps0, steps1))
    # accumulated gradients of all four subnets were synchronized: the weights are bit-identical
    assert ranks[0]["params_sha256"] == ranks[1]["params_sha256"]
    assert ranks[0]["val_acc_max"] == ranks[1]["val_acc_max"]


def test_ddp_without_find_unused_parameters_is_a_config_error() -> None:
    """The check reads the public flag of torch's DDP wrapper (one gloo process), no private Lightning state."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        for unused in (False, True):
            strategy = DDPStrategy(process_group_backend="gloo", find_unused_parameters=unused)
            strategy.model = DistributedDataParallel(torch.nn.Linear(2, 2), find_unused_parameters=unused)
            if unused:
                check_ddp_strategy(strategy)
            else:
                with pytest.raises(ConfigError, match="trainer.strategy.find_unused_parameters=true"):
                    check_ddp_strategy(strategy)
        check_ddp_strategy(DDPStrategy(process_group_backend="gloo"))  # not wrapped yet: nothing to check
    finally:
        dist.destroy_process_group()
