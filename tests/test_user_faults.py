"""Issue 17: what a new user hits. Each test runs the user's exact command (or injects the exact fault) and
checks the fixed behaviour: sweeps run, diverged runs stop in one line, exports are swapped in as a whole,
run directories are not shared, errors are one line before heavy setup, output is readable when piped."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from search_support import digits, write_checkpoint

from effnn.callbacks.nonfinite import NonFiniteError, StopOnNonFinite, non_finite_tensors
from effnn.callbacks.progress import summary_metrics
from effnn.errors import ConfigError, DatasetNotFoundError, EffnnError
from effnn.io import OutputExistsError, atomic_directory
from effnn.pipeline import train
from effnn.preflight import check_config, check_output_dir
from tests.conftest import ROOT, compose_config, run_cli

FAST = ["data=synthetic", "data.num_samples=256", "trainer.max_epochs=1", "trainer.enable_model_summary=false"]


def logs_env(tmp_path: Path) -> dict[str, str]:
    """Where a user's ``logs/`` goes (README: EFFNN_LOG_DIR moves it), so tests never write into the repo."""
    return {"EFFNN_LOG_DIR": str(tmp_path / "logs"), "OMP_NUM_THREADS": "1"}


def one_error_line(res: subprocess.CompletedProcess, *needles: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-3000:])
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


# 1. sweeps -------------------------------------------------------------------------------------------------

def test_sweep_dirs_resolve_outside_any_hydra_job() -> None:
    """The root cause of the sweep crash: a sweeper (basic, Optuna) and the submitit launcher resolve
    hydra.sweep.dir in the launching process, where no HydraConfig is set. Reproduce exactly that."""
    code = (
        "from hydra import compose, initialize_config_dir\n"
        "from hydra.core.hydra_config import HydraConfig\n"
        f"with initialize_config_dir(config_dir={str(ROOT / 'conf')!r}, version_base='1.3'):\n"
        "    for extra in ([], ['hparams_search=optuna'], ['hydra/launcher=slurm']):\n"
        "        cfg = compose('config', overrides=extra, return_hydra_config=True)\n"
        "        assert not HydraConfig.initialized()\n"
        "        print(cfg.hydra.sweep.dir, cfg.hydra.launcher.get('submitit_folder', '-'))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "EFFNN_LOG_DIR": "/x/logs"})
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 3 and all(ln.startswith("/x/logs/train/multiruns/") for ln in lines)
    assert "/.submitit/%j" in lines[2]


def test_optuna_sweep_without_sweep_dir(tmp_path: Path) -> None:
    res = run_cli(["train.py", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *FAST, "logger=none",
                   "callbacks=none"], env=logs_env(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    (result,) = (tmp_path / "logs" / "train" / "multiruns").glob("*/optimization_results.yaml")
    assert 0.0 <= yaml.safe_load(result.read_text())["best_value"] <= 1.0


def test_slurm_launcher_config_resolves_for_a_ddp_sweep(tmp_path: Path) -> None:
    res = run_cli(["train.py", "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                   "+recipe=alphanet", "--cfg", "all", "--resolve"], env=logs_env(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    launcher = yaml.safe_load(res.stdout)["hydra"]["launcher"]
    assert launcher["nodes"] == 2 and launcher["tasks_per_node"] == 4 and launcher["gpus_per_node"] == 4
    assert launcher["submitit_folder"].startswith(str(tmp_path / "logs" / "alphanet" / "multiruns"))


# 2. diverged runs ------------------------------------------------------------------------------------------

def test_diverged_run_exits_nonzero_in_one_line(tmp_path: Path) -> None:
    """The user's command: lr=1e8 used to exit 0 with NaN weights saved as last.ckpt and as the best."""
    res = run_cli(["train.py", "+recipe=classification", "trainer.max_epochs=2", "model.optimizer.lr=1e8"],
                  env=logs_env(tmp_path))
    one_error_line(res, "diverged at global step", "model.optimizer.lr", "precision")
    saved = list((tmp_path / "logs").rglob("*.ckpt"))
    for path in saved:
        assert not non_finite_tensors(torch.load(path, map_location="cpu", weights_only=False)["state_dict"])


class PoisonWeights(Callback):
    """Fault injection: set one weight to NaN after ``at_step`` optimizer steps (a divergence mid-run)."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


def test_divergence_after_a_good_epoch_keeps_the_good_checkpoints(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("data=synthetic", "data.num_samples=256", "trainer.max_epochs=3", "logger=none",
                   "callbacks.rich_progress_bar=null", "+trainer.enable_progress_bar=false",
                   "+callbacks.poison._target_=tests.test_user_faults.PoisonWeights", "+callbacks.poison.at_step=12")
    with pytest.raises(NonFiniteError, match="diverged at global step 12 .*non-finite"):
        train(cfg)
    ckpts = {p.name: torch.load(p, map_location="cpu", weights_only=False)
             for p in (tmp_path / "checkpoints").glob("*.ckpt")}
    assert "last.ckpt" in ckpts and len(ckpts) == 2  # the good epochs before the divergence were kept
    for ckpt in ckpts.values():
        assert 0 < ckpt["global_step"] <= 12 and not non_finite_tensors(ckpt["state_dict"])


def test_checkpoint_with_nan_is_never_written() -> None:
    class T:
        global_step, current_epoch, precision, optimizers = 5, 1, "bf16-mixed", []

    with pytest.raises(NonFiniteError, match="it was not written"):
        StopOnNonFinite().on_save_checkpoint(T(), None, {"state_dict": {"w": torch.tensor([1.0, float("inf")])}})
    StopOnNonFinite().on_save_checkpoint(T(), None, {"state_dict": {"w": torch.ones(2), "n": torch.tensor(3)}})


# 3. exports ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def supernet_export(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from effnn.search import fixed_batches, load_supernet_checkpoint

    tmp = tmp_path_factory.mktemp("export")
    loaded = load_supernet_checkpoint(write_checkpoint(tmp / "last.ckpt"))
    dm = digits()
    return {"loaded": loaded, "calib": fixed_batches(dm.train_set, 2, 32, seed=0),
            "verify": next(iter(dm.val_dataloader()))[0][:4]}


def _export(ctx: dict, out: Path, arch, **kw):
    from effnn.export import export_subnet

    return export_subnet(ctx["loaded"], arch, ctx["calib"], out, verify_batch=ctx["verify"], **kw)


def test_reexport_refuses_then_replaces_as_a_whole(supernet_export: dict, tmp_path: Path) -> None:
    from effnn.export import load_exported

    space = supernet_export["loaded"].space
    out = tmp_path / "subnet"
    _export(supernet_export, out, space.max_arch(), onnx=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"model.safetensors", "model.pt2", "model.onnx"} <= set(before)
    with pytest.raises(OutputExistsError, match="overwrite=true"):
        _export(supernet_export, out, space.min_arch(), program="none", onnx=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched
    _export(supernet_export, out, space.min_arch(), program="none", onnx=False, weights_format="pt",
            overwrite=True)
    assert {p.name for p in out.iterdir()} == {"arch.yaml", "export.json", "model.pt"}  # no stale files
    assert load_exported(out).arch == space.min_arch()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_full_disk_mid_export_leaves_the_old_export_loadable(supernet_export: dict, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import effnn.export.exporter as exporter
    from effnn.export import load_exported

    space = supernet_export["loaded"].space
    out = tmp_path / "subnet"
    _export(supernet_export, out, space.max_arch(), program="none", onnx=False)
    good = load_exported(out)
    x = torch.randn(2, 3, 16, 16)

    def disk_full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(exporter, "atomic_write_text", disk_full)  # weights written, then arch.yaml fails
    with pytest.raises(OSError, match="No space left"):
        _export(supernet_export, out, space.min_arch(), program="none", onnx=False, overwrite=True)
    again = load_exported(out)
    assert again.arch == space.max_arch()
    with torch.no_grad():
        assert torch.equal(again(x), good(x))
    assert [p.name for p in tmp_path.iterdir()] == ["subnet"]


def test_export_cli_refuses_an_existing_export_in_a_second(tmp_path: Path) -> None:
    out = tmp_path / "subnet"
    out.mkdir()
    (out / "export.json").write_text("{}")
    res = run_cli(["tools/export.py", f"ckpt={tmp_path / 'missing.ckpt'}", "arch=min", f"out={out}"])
    one_error_line(res, "already holds an export", "overwrite=true")


def test_atomic_directory_keeps_old_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir()
    (target / "a").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target, overwrite=True) as tmp:
        (tmp / "b").write_text("new")
        raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["d"] and (target / "a").read_text() == "old"
    with atomic_directory(target, overwrite=True) as tmp:
        (tmp / "b").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b"]


# search outputs: same rules
def test_search_output_dir_rules(tmp_path: Path) -> None:
    from effnn.search.app import prepare_output_dir

    with pytest.raises(ConfigError, match="no search_state.json"):
        prepare_output_dir(tmp_path, resume=True, overwrite=False)  # used to start afresh silently
    (tmp_path / "archs").mkdir()
    (tmp_path / "pareto.csv").write_text("name\n")
    with pytest.raises(ConfigError, match="overwrite=true"):
        prepare_output_dir(tmp_path, resume=False, overwrite=False)
    prepare_output_dir(tmp_path, resume=False, overwrite=True)
    assert not (tmp_path / "archs").exists() and not (tmp_path / "pareto.csv").exists()


# 4. range test: in tests/test_readme_commands.py (the README's exact command) ----------------------------

# 5. two runs, one directory --------------------------------------------------------------------------------

def test_second_run_into_a_used_run_dir_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = run_cli(["train.py", *FAST, "logger=none", f"hydra.run.dir={run_dir}"], env=logs_env(tmp_path))
    assert first.returncode == 0, first.stderr[-3000:]
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    second = run_cli(["train.py", *FAST, "logger=none", f"hydra.run.dir={run_dir}"], env=logs_env(tmp_path))
    one_error_line(second, "already holds a run", "hydra.run.dir")
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before


def test_resume_in_place_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    check_output_dir(tmp_path, str(tmp_path / "checkpoints" / "last.ckpt"))
    with pytest.raises(EffnnError, match="already holds a run"):
        check_output_dir(tmp_path, None)


# 7. readable output ----------------------------------------------------------------------------------------

def test_piped_output_is_readable(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    res = run_cli(["train.py", "data=synthetic", "data.num_samples=256", "trainer.max_epochs=2",
                   "callbacks.text_progress.every_s=0.001", f"hydra.run.dir={run_dir}"], env=logs_env(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert out.count("`Trainer.fit` stopped") == 1  # one copy of each Lightning line
    assert " | step " in out and "steps/s" in out  # periodic progress although stdout is a pipe
    assert "Epoch 0/" not in out and "it/s" not in out  # no rich progress-bar redraws dumped into the pipe
    log = (run_dir / "train.log").read_text()
    assert "epoch 1/2: " in log and "epoch 2/2: " in log and "val/acc=" in log
    (final,) = [ln for ln in log.splitlines() if "final: " in ln]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert final.split("final: ")[1].startswith(f"val/acc={metrics['val/acc']:.4g} test/acc=")
    assert len(final) < 400 and len(metrics) >= 6
    assert set(tensorboard_hparams(run_dir / "tensorboard")) >= {"model.optimizer.lr", "data.batch_size", "seed"}


def tensorboard_hparams(directory: Path) -> list[str]:
    """Hyper-parameter names in the hparams plugin's session_start_info (what TensorBoard's HPARAMS tab shows)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    names: list[str] = []
    for events in sorted(directory.glob("events.*")):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    names += list(data.session_start_info.hparams)
    return names


def test_summary_picks_the_metrics_that_matter() -> None:
    metrics = {"train/loss_step": 1.0, "val/acc": 0.9, "test/acc": 0.8, "hw/latency_ms": 2.0, "lr-SGD": 0.1}
    assert list(summary_metrics(metrics)) == ["val/acc", "test/acc", "hw/latency_ms"]


# 8. one line, early ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "needle"), [("abc", "must be a whole number"), ("-3", "must be >= -1"),
                                                ("0", "untrained model")])
def test_bad_max_epochs_is_one_line_before_setup(value: str, needle: str, tmp_path: Path) -> None:
    res = run_cli(["train.py", f"trainer.max_epochs={value}"], env=logs_env(tmp_path))
    one_error_line(res, f"trainer.max_epochs={value}" if value != "abc" else "trainer.max_epochs='abc'", needle)
    assert "Trainable params" not in res.stdout  # nothing was built
    assert not (tmp_path / "logs").exists()  # and no run directory was left


def test_check_config_in_process() -> None:
    check_config(compose_config(["trainer.max_epochs=3"]))
    with pytest.raises(ConfigError, match="max_steps"):
        check_config(compose_config(["+trainer.max_steps=1.5"]))


def test_unwritable_and_full_output_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = run_cli(["train.py"], env={"EFFNN_LOG_DIR": "/proc/effnn-logs"})  # a read-only file system, even for root
    one_error_line(res, "not writable", "EFFNN_LOG_DIR")
    import effnn.preflight as preflight

    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 0))
    with pytest.raises(EffnnError, match="0 MiB free"):
        check_output_dir(tmp_path / "logs")


def test_disk_full_during_training_is_one_line(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    import effnn.io

    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(effnn.io, "atomic_write", full)
    monkeypatch.setattr(effnn.io, "atomic_torch_save", lambda obj, path: full(path, None))
    cfg = make_cfg(*FAST, "logger=none", "callbacks.rich_progress_bar=null", "+trainer.enable_progress_bar=false")
    with pytest.raises(EffnnError, match="No space left on device; free some space"):
        train(cfg)


def test_failed_run_leaves_no_run_directory(tmp_path: Path) -> None:
    res = run_cli(["train.py", "data.batch_size=-1"], env=logs_env(tmp_path))
    one_error_line(res, "batch_size")
    assert not list((tmp_path / "logs").rglob("train.log"))  # README's "pick your RUN" cannot pick it


def test_corrupt_cifar_batch_is_named(tmp_path: Path) -> None:
    from effnn.data.cifar import CIFAR10DataModule

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for name in CIFAR10DataModule.files:
        (base / name).write_bytes(b"\x80\x04 truncated")
    dm = CIFAR10DataModule(root=str(tmp_path), batch_size=8)
    with pytest.raises(DatasetNotFoundError, match="data_batch_1 is corrupt or truncated") as info:
        dm.setup("fit")
    assert "download=True" not in str(info.value) and "never downloads" in str(info.value)


def test_search_on_an_exported_finetuned_checkpoint_is_named(supernet_export: dict, tmp_path: Path) -> None:
    """What `python train.py model=exported model.path=subnet` saves, given to tools/search.py."""
    from effnn.export.finetune import exported_classifier

    _export(supernet_export, tmp_path / "subnet", supernet_export["loaded"].space.min_arch(), program="none",
            onnx=False)
    module = exported_classifier(str(tmp_path / "subnet"), 10, torch.optim.SGD)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    res = run_cli(["tools/search.py", f"ckpt={ckpt}", f"out={tmp_path / 'out'}"])
    one_error_line(res, "fine-tuned exported subnet", "not a supernet", "source_checkpoint")


# 9. small ---------------------------------------------------------------------------------------------------

def test_gitignore_covers_the_readme_outputs() -> None:
    res = subprocess.run(["git", "check-ignore", "search_out/x", "subnet/x", "logs/x"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.stdout.split() == ["search_out/x", "subnet/x", "logs/x"], res.stderr


def _image_tags(directory: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in directory.glob("events.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["images"])
    return tags


@pytest.mark.parametrize(("recipe", "figure"), [("cpt", "figures/training"),
                                                ("alphanet", "figures/subnets_acc_vs_cost")])
def test_training_figures_in_tensorboard(recipe: str, figure: str, make_cfg, tmp_path: Path) -> None:
    """Training used to log no figure at all (only the search did): CPT's precision schedule over the loss,
    and the supernet's evaluated subnets (accuracy vs hardware cost) now appear under IMAGES."""
    cfg = make_cfg(f"+recipe={recipe}", "trainer.max_epochs=2", "+trainer.limit_train_batches=3",
                   "+trainer.limit_val_batches=1", "test=false", "callbacks.rich_progress_bar=null",
                   "+trainer.enable_progress_bar=false", "trainer.enable_model_summary=false")
    train(cfg)
    assert figure in _image_tags(tmp_path / "tensorboard")


def test_resume_from_a_nan_checkpoint_is_refused(tmp_path: Path) -> None:
    """What older effnn left behind for a diverged run (NaN weights as last.ckpt): resuming it is refused."""
    make = run_cli(["train.py", *FAST, "logger=none", "test=false", f"hydra.run.dir={tmp_path / 'good'}"])
    assert make.returncode == 0, make.stderr[-3000:]
    ckpt = torch.load(tmp_path / "good" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    for tensor in ckpt["state_dict"].values():
        if torch.is_floating_point(tensor):
            tensor.fill_(float("nan"))
    torch.save(ckpt, tmp_path / "nan.ckpt")
    res = run_cli(["train.py", *FAST, "logger=none", f"ckpt_path={tmp_path / 'nan.ckpt'}"], env=logs_env(tmp_path))
    one_error_line(res, "holds non-finite weights", "earlier checkpoint")
