"""Supernet training (BigNAS / AttentiveNAS / AlphaNet) as a LightningModule with manual optimization.

One step: the largest subnet learns from labels (label-smoothed CE); its detached logits teach the
other sampled subnets (KL or alpha-divergence); gradients of all subnets accumulate; one clip-by-value and
one optimizer step. Under DDP every backward but the last skips gradient sync, all ranks draw archs from
one identically seeded generator, and attentive scores are averaged over ranks before choosing.
Validation re-estimates BN statistics of each evaluated subnet before measuring it, and logs the
latency and energy of each evaluated subnet on the configured accelerator (``effnn.hw``).
With ``precision`` the supernet is quantized per stage and every step also draws bit-widths
(switchable precision, ``effnn.nas.switchable``); validation then measures each evaluated subnet at
each evaluated precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.strategies import DDPStrategy
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torchmetrics.classification import MulticlassAccuracy

from effnn.config import DEFAULT_HARDWARE
from effnn.errors import ConfigError
from effnn.hw import CostModel, build_cost_model
from effnn.lit.optim import configure_warmup_cosine
from effnn.nas.bn_calibration import calibration_loader, recalibrate_bn
from effnn.nas.losses import LabelSmoothingCrossEntropy, build_kd_loss
from effnn.nas.samplers import CostFn, SandwichSampler, build_sampler, macs_cost
from effnn.nas.sandwich import sandwich_backward
from effnn.nas.space import Arch, SearchSpace, get_space
from effnn.nas.supernet import MBNet, Supernet, resize_to
from effnn.nas import switchable  # the module: effnn.nas.switchable -> effnn.precision -> effnn.lit is a cycle

#: sampler.cost names served by the hardware plugin, and the metric each reads
HARDWARE_COSTS = {"latency": "latency_ms", "energy": "energy", "edp": "edp"}
#: hardware metrics logged for every evaluated subnet as hw/<metric>_<name>
HARDWARE_LOGGED = ("latency_ms", "energy")


def hardware_cost_model(hardware: Any, where: str = "model.hardware") -> CostModel:
    """``effnn.hw.build_cost_model(hardware)``, with bad presets/mappings reported as config errors."""
    try:
        return build_cost_model(hardware)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def build_cost(space: SearchSpace, name: str, num_classes: int, hardware: Any = None,
               in_chans: int = 3) -> CostFn:
    """``macs`` (millions), or ``latency``/``energy``/``edp`` on ``hardware`` (a preset name, a
    ``effnn/conf/hardware``-style mapping or an ``effnn.hw`` cost model)."""
    if name == "macs":
        return macs_cost(space, num_classes)
    if name not in HARDWARE_COSTS:
        raise ConfigError(f"model.sampler.cost={name!r} is unknown; choose macs, {', '.join(HARDWARE_COSTS)}")
    if hardware is None:
        raise ConfigError(f"model.sampler.cost={name} needs an accelerator: set model.hardware (or "
                          f"model.sampler.hardware) to a preset such as systolic_16x16_os or a "
                          f"effnn/conf/hardware-style mapping")
    model, key = hardware_cost_model(hardware, "model.sampler.hardware"), HARDWARE_COSTS[name]
    if key not in model.metric_names:
        raise ConfigError(f"model.sampler.cost={name} needs a hardware model that reports {key}; "
                          f"{model.name!r} reports only {', '.join(model.metric_names)}")
    return lambda arch: float(model.score_sections(space.workload_sections(arch, num_classes, in_chans))[key])


def check_ddp_strategy(strategy: Any) -> None:
    """DDP must look for unused parameters: the last (synced) backward is the smallest subnet's, and DDP
    all-reduces the accumulated gradients of parameters it did not use only in that mode. Reads the public
    ``find_unused_parameters`` of torch's ``DistributedDataParallel`` wrapper (``strategy.model``), so it
    runs once the strategy has wrapped the module (``on_fit_start``)."""
    wrapped = getattr(strategy, "model", None)
    if isinstance(strategy, DDPStrategy) and isinstance(wrapped, DistributedDataParallel) \
            and not wrapped.find_unused_parameters:
        raise ConfigError("supernet training under DDP leaves parameters unused by some subnets; set "
                          "trainer.strategy.find_unused_parameters=true")


class LabelTargets(nn.Module):
    """The no-KD arm's loss for the non-largest subnets: ``ce(logits, labels)``, the teacher ignored."""

    def __init__(self, ce: nn.Module, labels: torch.Tensor) -> None:
        super().__init__()
        self.ce = ce
        self.labels = labels

    def forward(self, logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, self.labels)


class SupernetModule(L.LightningModule):
    """Trains every subnet of ``space`` at once; logs train/loss, val/acc_max, val/acc_min, val/acc, test/acc.

    ``sampler``: ``kind`` (uniform | attentive), ``num_middle``, ``seed`` and, for attentive, ``k``, ``mode``
    (best | worst), ``cost`` (macs | latency | energy | edp), ``hardware`` (default: the module's),
    ``bin_width``/``num_bins``, ``prior_samples``. ``kd_loss``: ``name`` (alpha | kl | none) plus that
    loss's options; ``none`` trains every subnet on the labels (the same label-smoothed CE as the largest),
    the no-distillation baseline. ``eval_archs`` maps names to extra archs (AlphaNet YAML dicts) evaluated
    as ``val/acc_<name>``.
    ``hardware`` (an ``effnn.hw`` preset name or ``effnn/conf/hardware``-style mapping; None: off) prices every
    evaluated subnet: ``hw/latency_ms_<name>``, ``hw/energy_<name>`` and, for the largest subnet,
    ``hw/latency_ms`` and ``hw/energy``, logged with each validation and test.
    ``precision`` (``effnn.config.SwitchablePrecisionConfig`` fields; None: full precision, as before) trains
    a switchable-precision supernet; each evaluated subnet is then logged as ``val/acc_<name>_<bits>``
    (e.g. ``val/acc_max_w8a8``, ``val/acc_min_fp``) and ``val/acc_<name>`` is its accuracy at the ladder's
    top precision.
    """

    def __init__(self, optimizer: Callable[..., Optimizer], num_classes: int, space: str = "tiny32",
                 in_chans: int = 3, sampler: Mapping[str, Any] | None = None,
                 kd_loss: Mapping[str, Any] | None = None, label_smoothing: float = 0.1,
                 grad_clip_value: float | None = 1.0, scheduler: Mapping[str, Any] | None = None,
                 dropout: float = 0.0, bn_calibration_batches: int = 16,
                 eval_archs: Mapping[str, Mapping[str, Any]] | None = None,
                 channels_last: bool = False, hardware: str | Mapping[str, Any] | None = DEFAULT_HARDWARE,
                 precision: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"], logger=False)
        self.automatic_optimization = False
        self.space = get_space(space)
        self.net = Supernet(self.space, num_classes, in_chans, dropout)
        #: switchable precision (None: a full-precision supernet, unchanged behaviour)
        self.precision_settings = (None if precision is None
                                   else switchable.SwitchableSettings.parse(precision, self.space.num_stages))
        self.stage_precision = (None if self.precision_settings is None
                                else switchable.attach_precision(self.net, self.precision_settings))
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.channels_last = channels_last
        self.optimizer_factory = optimizer
        self.scheduler_cfg = dict(scheduler or {})
        self.grad_clip_value = grad_clip_value
        self.bn_calibration_batches = bn_calibration_batches
        self.ce = LabelSmoothingCrossEntropy(label_smoothing)
        kd = dict(kd_loss or {"name": "alpha"})
        kd_name = kd.pop("name", "alpha")
        if kd_name == "none":
            if kd:
                raise ConfigError(f"model.kd_loss: name=none takes no options, got {sorted(kd)}")
            self.kd: nn.Module | None = None
        else:
            try:
                self.kd = build_kd_loss(kd_name, **kd)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"model.kd_loss: {err} (alpha takes alpha_min, alpha_max, iw_clip; "
                                  f"kl takes temperature; none takes nothing)") from err
        #: the accelerator evaluated subnets are priced on (and the default for hardware-aware sampling)
        self.cost_model: CostModel | None = None if hardware is None else hardware_cost_model(hardware)
        self.num_classes, self.in_chans = num_classes, in_chans
        self.sampler, self.arch_seed = self._build_sampler(dict(sampler or {}), num_classes)
        #: one generator, seeded identically on every rank: all ranks draw the same archs
        self.arch_rng = torch.Generator().manual_seed(self.arch_seed)
        self.eval_archs: dict[str, Arch] = {"max": self.space.max_arch(), "min": self.space.min_arch()}
        for name, data in (eval_archs or {}).items():
            if name in self.eval_archs:
                raise ConfigError(f"model.eval_archs.{name}: 'max' and 'min' are always evaluated; rename it")
            try:
                self.eval_archs[name] = self.space.validate(Arch.from_dict(data, strict=False))
            except ValueError as err:
                raise ConfigError(f"model.eval_archs.{name}: {err}") from err
        #: metric name -> (arch name, bits); bits None = full precision
        self.eval_targets: dict[str, tuple[str, Any]] = {n: (n, None) for n in self.eval_archs}
        if self.precision_settings is not None:
            self.eval_targets = {f"{n}_{switchable.bits_label(b)}": (n, b) for n in self.eval_archs
                                 for b in self.precision_settings.eval_bits}
        self.val_acc = nn.ModuleDict({n: MulticlassAccuracy(num_classes, average="micro")
                                      for n in self.eval_targets})
        self.test_acc = nn.ModuleDict({n: MulticlassAccuracy(num_classes, average="micro")
                                       for n in self.eval_targets})
        self._eval_models: dict[str, nn.Module] = {}
        self._hardware_metrics: dict[str, float] | None = None
        #: archs of the last training step (max, middle..., min) and, for attentive sampling, this rank's
        #: own candidate scores before averaging over ranks; kept for logging and tests
        self.last_archs: tuple[Arch, ...] = ()
        self.last_local_scores: list[list[float]] = []
        self.last_groups: list = []  # switchable precision: the (arch, bits) groups of the last step

    def _build_sampler(self, cfg: dict[str, Any], num_classes: int) -> tuple[SandwichSampler, int]:
        kind = cfg.pop("kind", "uniform")
        num_middle = int(cfg.pop("num_middle", 2))
        seed = int(cfg.pop("seed", 0))
        cost_name, hardware = cfg.pop("cost", "macs"), cfg.pop("hardware", None)
        try:
            if kind == "attentive":
                cost = build_cost(self.space, cost_name, num_classes,
                                  self.cost_model if hardware is None else hardware, self.in_chans)
                return build_sampler(self.space, kind, num_middle, cost, seed=seed, **cfg), seed
            if cfg or cost_name != "macs" or hardware is not None:
                extra = sorted(cfg) + (["cost"] if cost_name != "macs" else [])
                extra += ["hardware"] if hardware is not None else []
                raise ConfigError(f"model.sampler options {extra} only apply to sampler.kind=attentive")
            return build_sampler(self.space, kind, num_middle), seed
        except TypeError as err:
            raise ConfigError(f"model.sampler: {err}") from err
        except ValueError as err:
            raise ConfigError(f"model.sampler: {err}") from err

    # ------------------------------------------------------------------------------------------ helpers

    def _inputs(self, x: torch.Tensor, resolution: int) -> torch.Tensor:
        x = resize_to(x, resolution)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the active subnet (``self.net.set_arch``), inputs resized to its resolution."""
        return self.net(self._inputs(x, self.net.arch.resolution))

    def _ddp_model(self) -> DistributedDataParallel | None:
        model = self.trainer.strategy.model if self._trainer is not None else None
        return model if isinstance(model, DistributedDataParallel) else None

    def _skip_grad_sync(self) -> contextlib.AbstractContextManager:
        ddp = self._ddp_model()
        return ddp.no_sync() if ddp is not None else contextlib.nullcontext()

    def _score_fn(self, x: torch.Tensor, y: torch.Tensor) -> Callable[[Sequence[Arch]], list[float]]:
        """Minibatch CE of candidate archs (BN on batch statistics), averaged over ranks."""

        def score(archs: Sequence[Arch]) -> list[float]:
            losses = []
            with torch.no_grad():
                for arch in archs:
                    self.net.set_arch(arch)
                    logits = self.net(self._inputs(x, arch.resolution))
                    losses.append(F.cross_entropy(logits.float(), y))
            local = torch.stack(losses)
            self.last_local_scores.append(local.tolist())
            return self.trainer.strategy.reduce(local, reduce_op="mean").tolist()

        return score

    # ------------------------------------------------------------------------------------------ training

    def on_fit_start(self) -> None:
        check_ddp_strategy(self.trainer.strategy)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        opt = self.optimizers()
        sched = self.lr_schedulers()
        self.last_local_scores = []
        archs = self.sampler.archs(self.arch_rng, self._score_fn(x, y))
        self.last_archs = tuple(archs)
        opt.zero_grad(set_to_none=True)
        kd = self.kd if self.kd is not None else LabelTargets(self.ce, y)
        if self.stage_precision is None:
            max_loss, kd_mean = sandwich_backward(
                self.net, archs, x, y, self.ce, kd, prepare=self._inputs, backward=self.manual_backward,
                skip_grad_sync=self._skip_grad_sync)
        else:
            self.last_groups = switchable.step_groups(self.precision_settings, archs, self.arch_rng)
            losses = switchable.switchable_backward(
                self.net, self.stage_precision, self.last_groups, x, y, self.ce, kd, prepare=self._inputs,
                backward=self.manual_backward, skip_grad_sync=self._skip_grad_sync)
            max_loss, kd_mean = losses["max"], losses["kd"]
            self.log("train/loss_cascade", losses["cascade"], on_step=True, on_epoch=True)
        if self.grad_clip_value:
            self.clip_gradients(opt, gradient_clip_val=self.grad_clip_value, gradient_clip_algorithm="value")
        opt.step()
        sched.step()
        self.net.set_arch(self.space.max_arch())
        self.log("train/loss_max", max_loss, prog_bar=True, on_step=True, on_epoch=True)
        self.log("train/loss_kd", kd_mean, prog_bar=True, on_step=True, on_epoch=True)
        self.log("train/loss", max_loss + kd_mean, on_step=True, on_epoch=True)
        return max_loss + kd_mean

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_warmup_cosine(self, self.net, self.optimizer_factory, self.scheduler_cfg)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nas_arch_rng_state"] = self.arch_rng.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("nas_arch_rng_state")
        if state is not None:
            self.arch_rng.set_state(state)

    # ------------------------------------------------------------------------------------------ evaluation

    def _calibration_batches(self) -> Iterator[Any]:
        dm = self.trainer.datamodule
        if dm is None:
            raise ConfigError("supernet evaluation recalibrates BN on training batches; pass a datamodule")
        if getattr(dm, "train_set", True) is None:
            dm.setup("fit")
        return iter(calibration_loader(dm))

    def calibrated_subnet(self, arch: Arch) -> MBNet:
        """A static copy of ``arch`` with BN statistics re-estimated on ``bn_calibration_batches`` batches."""
        with self.net.set_arch(arch):
            device = self.net.conv_stem.weight.device
            recalibrate_bn(self.net, self._calibration_batches(), self.bn_calibration_batches,
                           forward=lambda b: self.net(self._inputs(b[0].to(device), arch.resolution)))
            return self.net.extract(arch).eval()

    def _prepare_eval(self) -> None:
        if self.stage_precision is None:
            self._eval_models = {name: self.calibrated_subnet(arch) for name, arch in self.eval_archs.items()}
            return
        batches = []  # the same calibration batches for every subnet and precision
        for batch in self._calibration_batches():
            if len(batches) == self.bn_calibration_batches:
                break
            batches.append(batch)
        self._eval_models = {
            key: switchable.calibrated_copy(self.stage_precision, self.eval_archs[name], bits, batches, len(batches),
                                 self._inputs)
            for key, (name, bits) in self.eval_targets.items()}

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: nn.ModuleDict) -> None:
        x, y = batch
        for key, model in self._eval_models.items():
            arch = self.eval_archs[self.eval_targets[key][0]]
            metrics[key].update(model(self._inputs(x, arch.resolution)), y)

    def hardware_metrics(self) -> dict[str, float]:
        """``hw/<metric>_<name>`` of every evaluated subnet on ``hardware`` (+ ``hw/<metric>`` of the
        largest); empty without hardware. Deterministic, so computed once and logged by every rank alike."""
        if self._hardware_metrics is None:
            self._hardware_metrics = {}
            if self.cost_model is not None:
                for name, arch in self.eval_archs.items():
                    sections = self.space.workload_sections(arch, self.num_classes, self.in_chans)
                    scored = self.cost_model.score_sections(sections)
                    for key in HARDWARE_LOGGED:
                        if key in scored:
                            self._hardware_metrics[f"hw/{key}_{name}"] = scored[key]
                            if name == "max":
                                self._hardware_metrics[f"hw/{key}"] = scored[key]
        return self._hardware_metrics

    def _log_eval(self, stage: str, metrics: nn.ModuleDict) -> None:
        top = None
        if self.precision_settings is not None:
            top, evaluated = self.precision_settings.ladder[0], self.precision_settings.eval_bits
            top = top if top in evaluated else evaluated[0]
        for key, metric in metrics.items():
            value = metric.compute()  # torchmetrics syncs over ranks
            name, bits = self.eval_targets[key]
            if key != name:
                self.log(f"{stage}/acc_{key}", value)
            if bits == top:  # the plain name: full precision, or the ladder's top precision
                self.log(f"{stage}/acc_{name}", value, prog_bar=name in ("max", "min"))
                if name == "max":
                    self.log(f"{stage}/acc", value)
            metric.reset()
        for key, value in self.hardware_metrics().items():
            self.log(key, value)
        self._eval_models = {}

    def on_validation_epoch_start(self) -> None:
        self._prepare_eval()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_acc)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_acc)

    def on_test_epoch_start(self) -> None:
        self._prepare_eval()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_acc)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_acc)
