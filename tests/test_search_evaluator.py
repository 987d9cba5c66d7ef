"""Loading supernet checkpoints, and subnet accuracy with BN recalibration on a trained micro supernet."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from search_support import digits, micro_space, trained_supernet, write_checkpoint

from effnn.errors import CheckpointError
from effnn.models import create_model
from effnn.nas import build_supernet, get_space, resize_to
from effnn.search import SubnetAccuracy, fixed_batches, load_supernet_checkpoint, top1_accuracy
from effnn.search.evaluator import recalibrate_subnet


def test_checkpoint_round_trip_with_space_in_hyper_parameters(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "last.ckpt", prefix="net.")
    loaded = load_supernet_checkpoint(path)
    assert (loaded.space_name, loaded.num_classes, loaded.in_chans) == ("micro", 10, 3)
    reference = trained_supernet().state_dict()
    assert loaded.supernet.state_dict().keys() == reference.keys()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.supernet.state_dict().items())


def test_space_from_run_config_or_by_shape(tmp_path: Path) -> None:
    net = build_supernet("tiny32", num_classes=7, in_chans=1)
    ckpt = {"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}, "hyper_parameters": {}}
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)
    loaded = load_supernet_checkpoint(path)  # no hint anywhere: found by matching shapes
    assert (loaded.space_name, loaded.num_classes, loaded.in_chans) == ("tiny32", 7, 1)
    # the run's saved Hydra config is read when the checkpoint has no hint (here: a wrong one)
    (tmp_path / "run" / ".hydra").mkdir()
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"model": {"space": "attentivenas"}}))
    with pytest.raises(CheckpointError, match="fits no known search space.*'attentivenas'"):
        load_supernet_checkpoint(path)


def test_bad_checkpoints_give_one_line_errors(tmp_path: Path) -> None:
    classifier = create_model("cifar_resnet8", num_classes=10)
    torch.save({"state_dict": {f"net.{k}": v for k, v in classifier.state_dict().items()}}, tmp_path / "cls.ckpt")
    good = write_checkpoint(tmp_path / "good.ckpt")
    (tmp_path / "cut.ckpt").write_bytes(good.read_bytes()[:5000])
    cases = {"cls.ckpt": "is not a supernet checkpoint", "cut.ckpt": "corrupt or truncated",
             "missing.ckpt": "does not exist"}
    for name, match in cases.items():
        with pytest.raises(CheckpointError, match=match) as err:
            load_supernet_checkpoint(tmp_path / name)
        assert "\n" not in str(err.value)


def test_recalibrated_bn_statistics_are_the_calibration_batch_averages() -> None:
    """Closed form: the stem BN's running mean is the average over batches of the per-batch channel means
    of the stem conv output at the arch's resolution."""
    net = trained_supernet()
    space = net.space
    arch = space.sample(__import__("random").Random(4))
    batches = fixed_batches(digits().train_set, 3, 32, seed=0)
    recalibrate_subnet(net, arch, batches)
    w = net.conv_stem.weight[:arch.width[0]]
    means = [F.conv2d(resize_to(x, arch.resolution), w, stride=space.stem_stride, padding=1).mean(dim=(0, 2, 3))
             for x, _ in batches]
    expected = torch.stack(means).mean(0)
    assert torch.allclose(net.bn1.running_mean[:arch.width[0]], expected, atol=1e-5)
    assert int(net.bn1.num_batches_tracked) == 3


def test_subnet_accuracy_matches_an_independent_static_evaluation() -> None:
    dm = digits()
    net = trained_supernet()
    space = micro_space()
    calib = fixed_batches(dm.train_set, 4, 64, seed=0)
    acc = SubnetAccuracy(net, calib, dm.val_dataloader())
    archs = [space.min_arch(), space.max_arch(), space.sample(__import__("random").Random(1))]
    first = [acc(a) for a in archs]
    assert [acc(a) for a in reversed(archs)] == list(reversed(first))  # order does not matter
    assert min(first) > 30.0  # trained for seconds, but far above chance (10%)
    for arch, value in zip(archs, first):
        acc.recalibrate(arch)
        static = net.extract(arch).eval()
        x = torch.cat([x for x, _ in dm.val_dataloader()])
        y = torch.cat([y for _, y in dm.val_dataloader()])
        with torch.no_grad():
            pred = static(resize_to(x, arch.resolution)).argmax(1)
        assert value == pytest.approx(100.0 * (pred == y).float().mean().item())
        assert value == top1_accuracy(static, dm.val_dataloader(), arch.resolution)


def test_search_config_evaluates_on_the_validation_split(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from effnn.search.app import build_accuracy

    ckpt = write_checkpoint(tmp_path / "last.ckpt")
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("search", overrides=[f"ckpt={ckpt}", f"out={tmp_path}/out", "data.resolution=16"])
    loaded = load_supernet_checkpoint(ckpt)
    acc = build_accuracy(cfg, loaded, torch.device("cpu"))
    dm = digits()
    x_eval = torch.cat([x for x, _ in acc.eval_batches])
    assert torch.equal(x_eval, dm.val_set.tensors[0]) and not torch.equal(x_eval[: len(dm.test_set)],
                                                                          dm.test_set.tensors[0])
    assert len(acc.calib_batches) == cfg.search.calibration.batches
    assert get_space("tiny32").name == "tiny32"
