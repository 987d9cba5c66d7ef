"""Claims 1-3: supernet training on digits (tiny32 space), measured on fixed subnets after BN recalibration.

Supernet runs (all: sandwich rule, max + 2 middle + min, same schedule; only the named knob differs):

* ``alphanet``                      uniform middle archs, adaptive alpha-divergence KD (AlphaNet)
* ``alphanet`` + ``kd_loss=kl``     uniform middle archs, KL KD (BigNAS-style inplace distillation)
* ``alphanet`` + ``kd_loss=none``   uniform middle archs, no KD (every subnet on the labels)
* ``alphanet`` + attentive sampler  BestUp-3 middle archs (AttentiveNAS), alpha-divergence KD

After training, every run evaluates the same subnets (``reference_archs`` and a seeded sample for the
Pareto front): BN statistics re-estimated on the same training batches, then top-1 on the test split.
Claim 3 trains the reference archs alone (same epochs, optimizer and LR, schedule, label smoothing,
clipping). Every supernet run seeds its arch sampler with the run seed (``model.sampler.seed``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from claims.base import Budget, Claim, Results, failed_runs, fmt_stats, value_stats, within_noise
from claims.runner import RunSpec

SPACE = "tiny32"
NUM_CLASSES = 10
PARETO_SEED = 1234
CALIB_SEED = 0
ACC_FLOOR = 0.75  # points; 1 test image = 0.37
EVAL = "claims.supernet:evaluate_subnets"
REFERENCE_NAMES = ("min", "mid_small", "mid_large", "max")


# ----------------------------------------------------------------------------------------------- archs

def gene_fraction_arch(space: Any, fraction: float) -> Any:
    """The arch whose every gene sits at ``fraction`` of its sorted choices (0 = smallest, 1 = largest)."""
    from effnn.nas import Arch

    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    fields: dict[str, list] = {}
    for gene, choices in space.choices().items():
        ordered = sorted(choices)
        value = ordered[int(round(fraction * (len(ordered) - 1)))]
        name = gene.split("[")[0]
        if name == "resolution":
            fields[name] = value
        else:
            fields.setdefault(name, []).append(value)
    return space.validate(Arch.from_dict(fields))


def reference_archs(space: Any) -> dict[str, Any]:
    """min, two middle archs (genes at 1/3 and 2/3 of their choices) and max."""
    return {"min": space.min_arch(), "mid_small": gene_fraction_arch(space, 1 / 3),
            "mid_large": gene_fraction_arch(space, 2 / 3), "max": space.max_arch()}


def pareto_archs(space: Any, count: int, seed: int = PARETO_SEED) -> dict[str, Any]:
    """The reference archs plus uniformly sampled ones up to ``count`` archs, identical for every run."""
    archs = dict(reference_archs(space))
    rng = random.Random(seed)
    seen = set(archs.values())
    tries = 0
    while len(archs) < count and tries < 100 * count:
        tries += 1
        arch = space.sample(rng)
        if arch not in seen:
            seen.add(arch)
            archs[f"r{len(archs) - len(REFERENCE_NAMES):02d}"] = arch
    return archs


# ----------------------------------------------------------------------------------------------- measuring

def evaluate_subnets(cfg: Any, output_dir: Path, count: int, calib_batches: int) -> dict[str, Any]:
    """Measurement after a supernet run: load ``last.ckpt`` into the configured module and measure the test
    accuracy (percent) and MMACs of ``pareto_archs(space, count)``, each after BN recalibration on the same
    ``calib_batches`` seeded training batches."""
    import hydra
    from torch.utils.data import DataLoader

    from effnn.lit.checkpoint_io import load_checkpoint_file
    from effnn.nas import recalibrate_bn, resize_to

    ckpt_path = output_dir / "checkpoints" / "last.ckpt"
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"no {ckpt_path}; supernet runs must keep their last checkpoint")
    module = hydra.utils.instantiate(cfg.model)
    module.load_state_dict(load_checkpoint_file(ckpt_path)["state_dict"])
    net = module.net.eval()
    space = net.space
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    datamodule.setup("test")
    loader = DataLoader(datamodule.train_set, batch_size=datamodule.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(CALIB_SEED))
    calib = [batch for _, batch in zip(range(calib_batches), loader)]
    test = list(datamodule.test_dataloader())
    out = []
    for name, arch in pareto_archs(space, count).items():
        start = time.perf_counter()
        with torch.no_grad(), net.set_arch(arch):
            recalibrate_bn(net, calib, len(calib), forward=lambda b, r=arch.resolution: net(resize_to(b[0], r)),
                           sync_distributed=False)
            static = net.extract(arch).eval()
            correct = sum(int((static(resize_to(x, arch.resolution)).argmax(1) == y).sum()) for x, y in test)
        total = sum(len(y) for _, y in test)
        out.append({"name": name, "arch": arch.to_dict(), "mmacs": space.macs(arch, NUM_CLASSES) / 1e6,
                    "acc": 100.0 * correct / total, "eval_s": time.perf_counter() - start})
    return {"subnets": out, "calib_batches": len(calib), "test_images": sum(len(y) for _, y in test)}


class ResizedSubnet(nn.Module):
    """A static subnet that resizes its inputs to the arch's resolution, as the supernet does."""

    def __init__(self, net: nn.Module, resolution: int) -> None:
        super().__init__()
        self.net, self.resolution = net, resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from effnn.nas import resize_to

        return self.net(resize_to(x, self.resolution))


def standalone_subnet(space: str, arch: Mapping[str, Any], num_classes: int, in_chans: int = 3) -> nn.Module:
    """A freshly initialized static subnet (the supernet's initialization, sliced) for training alone."""
    from effnn.nas import Arch, build_supernet

    supernet = build_supernet(space, num_classes, in_chans)
    parsed = supernet.space.validate(Arch.from_dict(dict(arch)))
    return ResizedSubnet(supernet.extract(parsed).train(), parsed.resolution)


# ----------------------------------------------------------------------------------------------- runs

def _common(budget: Budget) -> tuple[str, ...]:
    return (f"trainer.max_epochs={budget.supernet_epochs}", f"model.space={SPACE}", *budget.limit_overrides())


def _supernet_spec(variant: str, budget: Budget, seed: int) -> RunSpec:
    recipe, extra = {
        "alpha": ("alphanet", ()),
        "kl": ("alphanet", ("~model.kd_loss", "+model.kd_loss={name:kl}")),
        "none": ("alphanet", ("~model.kd_loss", "+model.kd_loss={name:none}")),
        "attentive": ("alphanet", ("model.sampler.kind=attentive", "++model.sampler.k=3",
                                   "++model.sampler.mode=best", "++model.sampler.cost=macs")),
    }[variant]
    # the arch sequence follows the run seed, so the seed spread includes arch-sampling variance
    return RunSpec(recipe, (*_common(budget), f"model.sampler.seed={seed}", *extra), seed, measure=EVAL,
                   measure_args=(("count", budget.pareto_archs), ("calib_batches", budget.calib_batches)),
                   keep_checkpoint=True, weight=20.0 * budget.supernet_epochs)


def _arch_override(arch: Any) -> str:
    d = arch.to_dict()
    body = ",".join(f"{k}:{v}".replace(" ", "") for k, v in d.items())
    return "{" + body + "}"


def _standalone_spec(name: str, budget: Budget, seed: int) -> RunSpec:
    from effnn.nas import get_space

    arch = reference_archs(get_space(SPACE))[name]
    net = (f"+model.net={{_target_:claims.supernet.standalone_subnet,space:{SPACE},"
           f"arch:{_arch_override(arch)},num_classes:${{data.num_classes}},in_chans:${{data.in_chans}}}}")
    # the supernet recipe's optimizer (SGD, LR 0.05, Nesterov, weight decay 5e-5), schedule, label smoothing
    # and clipping (conf/model/supernet.yaml), so only weight sharing differs
    return RunSpec("classification", (f"trainer.max_epochs={budget.supernet_epochs}", *budget.limit_overrides(),
                                      "~model.net", net, "model.optimizer.lr=0.05",
                                      "model.optimizer.weight_decay=5.0e-5",
                                      "model.scheduler.warmup_epochs=1", "model.label_smoothing=0.1",
                                      "++trainer.gradient_clip_val=1.0", "++trainer.gradient_clip_algorithm=value"),
                   seed, weight=3.0 * budget.supernet_epochs)


def _variants_kd() -> tuple[str, ...]:
    return ("alpha", "kl", "none")


def plan_kd(budget: Budget, seeds: Sequence[int]) -> list[RunSpec]:
    return [_supernet_spec(v, budget, s) for v in _variants_kd() for s in seeds]


def plan_attentive(budget: Budget, seeds: Sequence[int]) -> list[RunSpec]:
    return [_supernet_spec(v, budget, s) for v in ("alpha", "attentive") for s in seeds]


def plan_standalone(budget: Budget, seeds: Sequence[int]) -> list[RunSpec]:
    return [*(_supernet_spec("alpha", budget, s) for s in seeds),
            *(_standalone_spec(n, budget, s) for n in REFERENCE_NAMES for s in seeds)]


# ----------------------------------------------------------------------------------------------- summaries

def subnet_table(results: Results, specs: Sequence[RunSpec]) -> dict[str, dict[str, Any]]:
    """Per arch name: its MMACs, arch and accuracy stats over the runs (seeds) that succeeded."""
    by_name: dict[str, dict[str, Any]] = {}
    for spec in specs:
        if not results[spec].ok:
            continue
        for sub in results[spec].measured["subnets"]:
            entry = by_name.setdefault(sub["name"], {"mmacs": sub["mmacs"], "arch": sub["arch"], "values": []})
            entry["values"].append(sub["acc"])
    return {name: {"mmacs": e["mmacs"], "arch": e["arch"], "acc": value_stats(e["values"])}
            for name, e in by_name.items()}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, accuracy) points no other point beats on both (lower cost, higher accuracy), by cost."""
    front: list[tuple[float, float]] = []
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((cost, acc))
    return front


def front_area(front: Sequence[tuple[float, float]], low: float, high: float) -> float:
    """Mean over cost in [low, high] of the best accuracy reachable at that cost (0 below the cheapest
    point): the hypervolume of the front w.r.t. (high, 0), normalized by the cost range."""
    if high <= low:
        raise ValueError(f"cost range [{low}, {high}] is empty")
    area = 0.0
    for i, (cost, acc) in enumerate(front):
        end = front[i + 1][0] if i + 1 < len(front) else high
        area += acc * (min(end, high) - max(cost, low))
    return area / (high - low)


def _cost_range() -> tuple[float, float]:
    from effnn.nas import get_space

    space = get_space(SPACE)
    return space.macs(space.min_arch(), NUM_CLASSES) / 1e6, space.macs(space.max_arch(), NUM_CLASSES) / 1e6


LABELS = {"alpha": "alpha-divergence KD", "kl": "KL KD", "none": "no KD", "attentive": "attentive BestUp-3",
          "uniform": "uniform"}


def summarize_kd(budget: Budget, seeds: Sequence[int], results: Results) -> dict[str, Any]:
    variants = ("alpha", "kl", "none")
    planned = set(_variants_kd())
    tables = {v: subnet_table(results, [_supernet_spec(v, budget, s) for s in seeds]) if v in planned else {}
              for v in variants}
    names = ("min", "mid_small", "mid_large")
    rows = []
    for v in variants:
        if v not in planned:
            rows.append([LABELS[v], *["not available yet"] * len(names)])
            continue
        rows.append([LABELS[v], *(fmt_stats(tables[v][n]["acc"]) if n in tables[v] else "n/a" for n in names)])
    means = {v: sum(tables[v][n]["acc"]["mean"] for n in names) / len(names)
             for v in variants if all(n in tables[v] for n in names)}
    held = None
    if "alpha" in means and "kl" in means:
        held = means["alpha"] >= means["kl"] and ("none" not in means or means["alpha"] > means["none"])
    ref = tables.get("alpha") or tables.get("kl") or {}
    columns = ["KD loss", *(f"{n} ({ref[n]['mmacs']:.2f} MMACs)" if n in ref else n for n in names)]
    specs = [_supernet_spec(v, budget, s) for v in planned for s in seeds]
    notes = [] if "none" in planned else [
        "no-KD row: effnn's supernet module has no kd_loss.name=none (every subnet trained on the labels) yet"]
    return {
        "table": {"columns": columns, "rows": rows},
        "notes": notes,
        "data": {"subnets": tables, "mean_over_archs": means, "epochs": budget.supernet_epochs},
        "criterion": "alpha-divergence gives the highest mean test accuracy over the min subnet and the two middle "
                     "archs (>= KL, > no KD)",
        "held": held,
        "headline": ", ".join(f"{LABELS[v]} {m:.2f}%" for v, m in means.items()) + " (mean of min + 2 middle archs)",
        "failures": failed_runs(results, specs),
    }


def summarize_attentive(budget: Budget, seeds: Sequence[int], results: Results) -> dict[str, Any]:
    low, high = _cost_range()
    samplers = {"uniform": "alpha", "attentive": "attentive"}
    data: dict[str, Any] = {}
    rows = []
    for label, variant in samplers.items():
        table = subnet_table(results, [_supernet_spec(variant, budget, s) for s in seeds])
        points = [(e["mmacs"], e["acc"]["mean"]) for e in table.values()]
        front = pareto_front(points)
        per_seed_area = []
        for s in seeds:
            spec = _supernet_spec(variant, budget, s)
            if results[spec].ok:
                pts = [(x["mmacs"], x["acc"]) for x in results[spec].measured["subnets"]]
                per_seed_area.append(front_area(pareto_front(pts), low, high))
        area = value_stats(per_seed_area)
        mean_acc = value_stats([p[1] for p in points]) if points else value_stats([])
        data[label] = {"subnets": table, "front": front, "front_area": area,
                       "mean_acc_all_archs": mean_acc["mean"]}
        rows.append([LABELS[label], str(len(points)), fmt_stats(area),
                     f"{mean_acc['mean']:.2f}" if mean_acc["mean"] is not None else "n/a",
                     " ".join(f"{c:.2f}:{a:.1f}" for c, a in front)])
    held = None
    if all(data[k]["front_area"]["mean"] is not None for k in samplers):
        held = data["attentive"]["front_area"]["mean"] > data["uniform"]["front_area"]["mean"]
    specs = [_supernet_spec(v, budget, s) for v in samplers.values() for s in seeds]
    return {
        "table": {"columns": ["sampler", "archs", "front score (%)", "mean acc all archs (%)",
                              "Pareto front MMACs:acc"], "rows": rows},
        "data": {**data, "cost_range_mmacs": [low, high], "epochs": budget.supernet_epochs},
        "criterion": "the attentive (BestUp-3) supernet's Pareto front of test accuracy vs MACs lies higher: larger "
                     "front score (mean over the MACs range of the best accuracy reachable at that cost)",
        "held": held,
        "headline": f"front score attentive {fmt_stats(data['attentive']['front_area'])} vs uniform "
                    f"{fmt_stats(data['uniform']['front_area'])}",
        "failures": failed_runs(results, specs),
    }


def summarize_standalone(budget: Budget, seeds: Sequence[int], results: Results) -> dict[str, Any]:
    table = subnet_table(results, [_supernet_spec("alpha", budget, s) for s in seeds])
    rows, data, verdicts = [], {}, []
    for name in REFERENCE_NAMES:
        specs = [_standalone_spec(name, budget, s) for s in seeds]
        alone = value_stats([100.0 * results[s].metric("test/acc") for s in specs if results[s].ok])
        shared = table.get(name, {}).get("acc", value_stats([]))
        mmacs = table.get(name, {}).get("mmacs")
        data[name] = {"mmacs": mmacs, "supernet": shared, "standalone": alone}
        if shared["mean"] is not None and alone["mean"] is not None:
            verdicts.append(within_noise(shared, alone, ACC_FLOOR))
            delta = f"{shared['mean'] - alone['mean']:+.2f}"
        else:
            delta = "n/a"
        rows.append([name, f"{mmacs:.2f}" if mmacs is not None else "n/a", fmt_stats(shared), fmt_stats(alone),
                     delta])
    held = all(verdicts) if len(verdicts) == len(REFERENCE_NAMES) else None
    specs = [_supernet_spec("alpha", budget, s) for s in seeds] + [
        _standalone_spec(n, budget, s) for n in REFERENCE_NAMES for s in seeds]
    return {
        "table": {"columns": ["arch", "MMACs", "supernet, no fine-tuning (%)", "trained alone (%)", "delta"],
                  "rows": rows},
        "data": {"archs": data, "epochs": budget.supernet_epochs},
        "criterion": f"every reference subnet taken from the supernet (BN recalibrated, no fine-tuning) is within "
                     f"noise (max of {ACC_FLOOR} points and the seed std) of, or better than, the same arch trained "
                     f"alone for the same epochs",
        "held": held,
        "headline": "; ".join(f"{n} {r[4]}" for n, r in zip(REFERENCE_NAMES, rows)) + " points (supernet - alone)",
        "failures": failed_runs(results, specs),
    }


KD_CLAIM = Claim(
    key="kd", number=1, title="alpha-divergence vs KL vs no KD: min subnet and two middle archs",
    published="AlphaNet (Wang et al., ICML 2021): adaptive alpha-divergence KD beats KL KD, most for small "
              "subnets (ImageNet top-1 of the smallest model: AlphaNet-A0 77.9 vs AttentiveNAS-A0 77.3)",
    recipes=("alphanet",), plan=plan_kd, summarize=summarize_kd)

ATTENTIVE_CLAIM = Claim(
    key="attentive", number=2, title="attentive BestUp-3 vs uniform sampling: Pareto front (accuracy vs MACs)",
    published="AttentiveNAS (Wang et al., CVPR 2021): BestUp sampling lifts the whole accuracy-vs-FLOPs Pareto "
              "front over uniform sampling",
    recipes=("alphanet",), plan=plan_attentive, summarize=summarize_attentive)

STANDALONE_CLAIM = Claim(
    key="standalone", number=3, title="supernet subnets without fine-tuning vs the same archs trained alone",
    published="BigNAS (Yu et al., ECCV 2020) / AttentiveNAS: subnets sliced from the supernet match or beat the "
              "same archs trained from scratch, with no retraining",
    recipes=("alphanet", "classification"), plan=plan_standalone, summarize=summarize_standalone)
