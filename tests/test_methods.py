"""Methods: registry and reference weights, the CE-weight rule, connectors sized by a probe,
gradients (student and connectors, never the teacher), DKD's warm-up, CRD's memory bank,
combinations, and every method end to end on digits through the CLI."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from edgekd.config import DistillConfig, build_config
from edgekd.distill import functional as EF
from edgekd.distill.methods import BindInfo, bind_methods, build_method, default_ce_weight, method_class, method_names
from edgekd.errors import EdgekdError
from edgekd.models import create_model

# The reference weights (RepDistiller scripts / mdistiller configs, with CE weight 1 except KD).
REFERENCE_WEIGHTS = {
    "kd": 0.9,
    "dkd": 1.0,
    "fitnet": 100.0,
    "at": 1000.0,
    "sp": 3000.0,
    "cc": 0.02,
    "rkd": 1.0,
    "pkt": 30000.0,
    "nst": 50.0,
    "fsp": 50.0,
    "crd": 0.8,
}


def test_every_method_is_registered_with_its_reference_weight():
    assert set(REFERENCE_WEIGHTS) <= set(method_names())
    for name, weight in REFERENCE_WEIGHTS.items():
        assert method_class(name).default_weight == weight, name


def test_ce_weight_rule():
    """KD alone: 0.1 CE + 0.9 KD. Anything else (feature methods, combinations, DKD): CE 1."""
    assert default_ce_weight(["kd"]) == 0.1
    for names in (["at"], ["dkd"], ["crd"], ["kd", "at"], ["crd", "kd"], []):
        assert default_ce_weight(names) == 1.0, names
    assert build_config(None, {}).distill.ce_weight == 0.1  # the default: KD
    assert build_config(None, {"distill.methods": [{"name": "at", "weight": 1000}]}).distill.ce_weight == 1.0
    assert build_config(None, {"distill.methods": [{"name": "kd", "weight": 0.9}]}).distill.ce_weight == 0.1
    assert build_config(None, {"distill.methods": [{"name": "kd"}, {"name": "rkd"}]}).distill.ce_weight == 1.0
    explicit = {"distill.methods": [{"name": "at"}], "distill.ce_weight": 0.3}
    assert build_config(None, explicit).distill.ce_weight == 0.3
    assert DistillConfig(methods=[]).ce_weight == 1.0


def test_dkd_warmup_is_linear_over_20_one_based_epochs():
    method = build_method("dkd")
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    full = EF.dkd(s, t, y, 1.0, 8.0, 4.0)
    for epoch, factor in ((0, 1 / 20), (9, 10 / 20), (19, 1.0), (200, 1.0)):
        got = method({"logits": s}, {"logits": t}, y, epoch)["dkd"]
        assert got.item() == pytest.approx(factor * full.item(), rel=1e-6)


def test_feature_warmup_ramp_is_linear_per_step():
    """distill.feature_warmup_epochs: 0 at the first step, half way at W/2, the full weight from W on;
    feature, relation and contrastive methods ramp, response methods (KD; DKD ramps itself) do not."""
    from edgekd.distill.trainer import method_ramps, ramp_factor

    assert ramp_factor(0.0, 2.0) == 0.0  # epoch 0, first step
    assert ramp_factor(0.5, 2.0) == pytest.approx(0.25)  # half of epoch 0
    assert ramp_factor(1.0, 2.0) == pytest.approx(0.5)  # mid-ramp
    assert ramp_factor(2.0, 2.0) == 1.0 and ramp_factor(4.9, 2.0) == 1.0  # end of the ramp, end of training
    assert ramp_factor(0.0, 0.0) == 1.0  # off: the references' setting, the default
    cfg = DistillConfig(feature_warmup_epochs=2)
    names = ["kd", "dkd", "at", "rkd", "crd"]
    assert method_ramps([build_method(n) for n in names], cfg) == [0.0, 0.0, 2.0, 2.0, 2.0]
    assert method_ramps([build_method(n) for n in names], DistillConfig()) == [0.0] * 5
    with pytest.raises(EdgekdError, match="feature_warmup_epochs"):
        build_config(None, {"distill.feature_warmup_epochs": -1})


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    teacher = create_model("cnn_medium", num_classes=10, in_channels=1).eval()
    student = create_model("cnn_small", num_classes=10, in_channels=1)
    return student, teacher


@pytest.mark.parametrize("name", sorted(REFERENCE_WEIGHTS))
def test_method_on_real_models_trains_student_and_connectors_only(name, pair):
    student, teacher = pair
    student.zero_grad(set_to_none=True)
    for p in teacher.parameters():
        p.requires_grad_(False)
    x = torch.randn(8, 1, 8, 8)
    y = torch.arange(8) % 10
    method = build_method(name)
    bn_before = student.stage1[0].bn.running_mean.clone()
    s_col, t_col = bind_methods([method], student, teacher, None, x[:2], BindInfo(50, torch.arange(50) % 10))
    assert torch.equal(student.stage1[0].bn.running_mean, bn_before)  # the probe ran in eval mode
    try:
        s_out = s_col(x)
        with torch.no_grad():
            t_out = t_col(x)
        s_out["index"] = t_out["index"] = torch.arange(8)
        terms = method(s_out, t_out, y, 30)
        loss = sum(terms.values())
        assert set(terms) == {name} and torch.isfinite(loss) and loss.item() != 0
        loss.backward()
    finally:
        s_col.close()
        t_col.close()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    connectors = list(method.parameters())
    assert all(p.grad is not None for p in connectors), name
    assert bool(connectors) == (name in ("fitnet", "fsp", "cc", "crd"))


def test_fitnet_regressor_is_sized_by_the_probe(pair):
    student, teacher = pair
    method = build_method("fitnet")
    for c in bind_methods([method], student, teacher, None, torch.randn(2, 1, 8, 8)):
        c.close()
    conv = method.regressor.conv
    assert (conv.in_channels, conv.out_channels) == (48, 64)  # stage 2 of cnn_small -> of cnn_medium
    with pytest.raises(EdgekdError, match="stage 5 does not exist"):
        bad = build_method("fitnet", {"hint": 5})
        bind_methods([bad], student, teacher, None, torch.randn(2, 1, 8, 8))


def test_crd_memory_bank_negatives_and_state():
    torch.manual_seed(0)
    labels = torch.arange(40) % 4
    method = build_method("crd", {"nce_k": 1000})
    emb_s, emb_t = torch.randn(6, 16), torch.randn(6, 24)
    method.bind({"embedding": emb_s}, {"embedding": emb_t}, BindInfo(40, labels))
    loss_mod = method.loss
    assert loss_mod.k == 39  # clipped to the training set
    idx, target = torch.tensor([0, 5, 10, 15, 20, 25]), labels[[0, 5, 10, 15, 20, 25]]
    drawn = loss_mod.sample(idx, target)
    assert drawn.shape == (6, 40) and torch.equal(drawn[:, 0], idx)
    assert (labels[drawn[:, 1:]] != target[:, None]).all()  # negatives come from the other classes
    before = loss_mod.memory.memory_s.clone()
    out = method({"embedding": emb_s, "index": idx}, {"embedding": emb_t, "index": idx}, target, 0)
    assert torch.isfinite(out["crd"]) and out["crd"].item() > 0
    after = loss_mod.memory.memory_s
    changed = (after != before).any(1)
    assert changed[idx].all() and not changed[[1, 2, 3]].any()
    v = torch.nn.functional.normalize(loss_mod.embed_s(emb_s), dim=1).detach()
    expected = 0.5 * before[idx] + 0.5 * v
    assert torch.allclose(after[idx], expected / expected.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(after[idx].norm(dim=1), torch.ones(6), atol=1e-5)
    assert {"loss.memory.memory_s", "loss.memory.memory_t", "loss.memory.z"} <= set(method.state_dict())


def test_crd_negatives_scale_with_the_dataset():
    """K/N stays at the reference's 16384/50000 unless nce_k is given (then clipped to N - 1)."""
    from edgekd.distill.crd import scaled_k

    assert scaled_k(50000) == 16384  # CIFAR-100's training set: the reference itself
    assert scaled_k(10000) == 3277 and scaled_k(100) == 33
    assert scaled_k(2) == 1 and scaled_k(3) == 1
    assert scaled_k(10000, 16384) == 9999 and scaled_k(10000, 500) == 500
    labels = torch.arange(10000) % 10
    method = build_method("crd")
    method.bind({"embedding": torch.randn(4, 16)}, {"embedding": torch.randn(4, 24)}, BindInfo(10000, labels))
    assert method.loss.k == 3277 and method.loss.memory.k == 3277
    idx = torch.tensor([0, 1, 2, 3])
    assert method.loss.sample(idx, labels[idx]).shape == (4, 3278)
    with pytest.raises(EdgekdError, match="nce_k >= 1 or unset"):
        build_method("crd", {"nce_k": 0})


def test_crd_nce_loss_by_hand():
    from edgekd.distill.crd import nce_loss

    scores, n = torch.tensor([[0.5, 0.1, 0.2], [0.05, 0.3, 0.01]]), 10
    m, pn = 2, 1 / 10
    ref = 0.0
    for row in scores.tolist():
        ref -= torch.log(torch.tensor(row[0] / (row[0] + m * pn + 1e-7))).item()
        ref -= sum(torch.log(torch.tensor(m * pn / (v + m * pn + 1e-7))).item() for v in row[1:])
    assert nce_loss(scores, n).item() == pytest.approx(ref / 2, rel=1e-5)


def test_combined_methods_train_together(digits_split):
    from edgekd.distill.trainer import TrainSetup, train

    train_split, val_split, norm = digits_split
    torch.manual_seed(0)
    teacher = create_model("cnn_medium", num_classes=10, in_channels=1)
    student = create_model("cnn_small", num_classes=10, in_channels=1)
    names = ["kd", "at", "rkd", "crd"]
    cfg = DistillConfig(
        epochs=1, batch_size=32, methods=[{"name": n, "weight": method_class(n).default_weight} for n in names]
    )
    assert cfg.ce_weight == 1.0
    methods = [(build_method(n), method_class(n).default_weight) for n in names]
    result = train(
        TrainSetup(
            student,
            train_split,
            val_split,
            norm,
            cfg,
            seed=0,
            device=torch.device("cpu"),
            teacher=teacher,
            methods=methods,
        )
    )
    losses = result["history"][0]["train_loss"]
    assert set(losses) == {"ce", *names} and all(v > 0 for v in losses.values())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in student.modules())  # collectors closed


@pytest.fixture(scope="module")
def digits_split():
    from edgekd.data import compute_normalization, load_data

    data = load_data("digits", seed=0, max_train_samples=160)
    return data.train, data.val, compute_normalization(data.train)


def test_feature_warmup_lowers_the_first_epochs_feature_term(digits_split):
    """Through the trainer: with a 2-epoch ramp, epoch 1's AT term is logged at about a quarter of its
    weight (mean factor over the epoch), and CE is unaffected in kind."""
    from edgekd.distill.trainer import TrainSetup, train

    train_split, val_split, norm = digits_split
    logged = {}
    for warmup in (0.0, 2.0):
        torch.manual_seed(0)
        teacher = create_model("cnn_medium", num_classes=10, in_channels=1)
        student = create_model("cnn_small", num_classes=10, in_channels=1)
        cfg = DistillConfig(
            epochs=1, batch_size=32, methods=[{"name": "at", "weight": 1000}], feature_warmup_epochs=warmup
        )
        setup = TrainSetup(
            student, train_split, val_split, norm, cfg, 0, torch.device("cpu"), teacher, [(build_method("at"), 1000.0)]
        )
        logged[warmup] = train(setup)["history"][0]["train_loss"]["at"]
    steps = len(train_split) // 32
    mean_factor = sum(i / steps for i in range(steps)) / steps / 2  # progress i/steps epochs of a 2-epoch ramp
    assert logged[2.0] < logged[0.0] * (mean_factor + 0.15)


# ---- end to end through the CLI ----------------------------------------------------------------
@pytest.fixture(scope="module")
def small_run(tmp_path_factory, cli, digits_teacher):
    out = tmp_path_factory.mktemp("methods") / "run"
    result = cli(
        "compress", "--teacher", digits_teacher, "--data", "digits", "--student", "cnn_small", "--epochs", "1",
        "--max-train-samples", "128", "--out", out, "--quiet", "--set", "bench.runs=50", "--set", "bench.sessions=1",
        "--set", "bench.throughput_runs=3", "--set", "bench.warmup=1", "--set", "distill.batch_size=32",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("methods", [*sorted(REFERENCE_WEIGHTS), "kd+at+rkd"])
def test_each_method_distils_through_the_cli(methods, small_run, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    result = cli("distill", run, "--methods", methods, "--epochs", "1", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "distill" / "metrics.json").read_text())
    losses = metrics["history"][-1]["train_loss"]
    names = methods.split("+")
    assert set(losses) == {"ce", *names}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    config = build_config(run / "config.yaml")
    assert [(m.name, m.weight) for m in config.distill.methods] == [(n, REFERENCE_WEIGHTS[n]) for n in names]
    assert config.distill.ce_weight == (0.1 if methods == "kd" else 1.0)


def test_methods_option_errors(small_run, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    for spec, message in (
        ("kd+nope", "unknown distillation method 'nope'"),
        ("kd+kd", "named twice"),
        ("kd+", "empty"),
    ):
        result = cli("distill", run, "--methods", spec)
        assert result.exit_code == 2 and message in result.output, result.output
    result = cli("distill", run, "--methods", "at", "--set", "distill.taps.stages=[nothere]")
    assert result.exit_code == 2 and "no module 'nothere'" in result.output


@pytest.mark.parametrize("preset", ["dkd-cifar.yaml", "crd-kd-cifar.yaml"])
def test_method_presets_are_valid_configs(preset):
    from pathlib import Path

    cfg = build_config(Path(__file__).resolve().parents[1] / "pipelines" / preset)
    assert cfg.distill.ce_weight == 1.0 and cfg.distill.epochs == 240
    for m in cfg.distill.methods:
        build_method(m.name, m.params)
