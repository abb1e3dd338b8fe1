"""Schemes and survey algorithms: their formulas on small tensors, and each one end to end on digits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
import pytest
import torch
import torch.nn.functional as F
from cli_helpers import quick_compress, sets
from schemes_helpers import run_stages

from edgekd.config import RunConfig
from edgekd.data import compute_normalization, load_data
from edgekd.distill.schemes import build_scheme, scheme_names
from edgekd.distill.schemes.byot import BYOTHook
from edgekd.distill.schemes.cross_modal import View
from edgekd.distill.schemes.cskd import CSKDHook
from edgekd.distill.schemes.dml import dml_losses
from edgekd.distill.schemes.lifelong import LwFHook, extend_classifier, lwf_loss
from edgekd.distill.schemes.multi_teacher import mix_logits, mix_weights
from edgekd.distill.schemes.probe import Capture, find_stages
from edgekd.distill.schemes.tfkd import tfkd_reg, virtual_teacher
from edgekd.distill.trainer import TrainSetup, evaluate, train
from edgekd.errors import EdgekdError
from edgekd.models import create_model
from edgekd.models.checkpoint import load_model_file

FAST = {"distill.guard.mode": "off"}


# ---- formulas --------------------------------------------------------------------------------
def test_registry_lists_every_scheme():
    assert set(scheme_names()) == {
        "offline",
        "dml",
        "byot",
        "cskd",
        "tfkd",
        "multi_teacher",
        "data_free",
        "adversarial",
        "cross_modal",
        "lifelong",
    }
    with pytest.raises(EdgekdError, match="unknown distillation scheme"):
        build_scheme("nope")


def test_dml_loss_is_ce_plus_mean_kl_to_the_others():
    torch.manual_seed(0)
    z = [torch.randn(4, 5, requires_grad=True) for _ in range(3)]
    y = torch.tensor([0, 1, 2, 3])
    losses = dml_losses(z, y)
    p = [F.softmax(t.detach(), 1) for t in z]
    kl = lambda a, b: (a * (a.log() - b.log())).sum(1).mean()  # noqa: E731
    manual = F.cross_entropy(z[0], y) + (kl(p[1], p[0]) + kl(p[2], p[0])) / 2
    assert torch.allclose(losses[0], manual, atol=1e-5)
    losses[0].backward()
    assert z[0].grad is not None and z[1].grad is None  # the others' predictions are targets only
    same = dml_losses([z[0].detach()] * 2, y)
    assert torch.allclose(same[0], F.cross_entropy(z[0].detach(), y), atol=1e-6)


def test_tfkd_virtual_teacher_and_loss():
    y = torch.tensor([2, 0])
    p = virtual_teacher(y, 4, 0.9)
    assert (
        torch.allclose(p.sum(1), torch.ones(2)) and p[0, 2] == pytest.approx(0.9) and p[0, 1] == pytest.approx(0.1 / 3)
    )
    s = torch.randn(2, 4)
    soft = F.softmax(p / 20.0, 1)
    manual = (soft * (soft.log() - F.log_softmax(s, 1))).sum(1).mean()
    assert torch.allclose(tfkd_reg(s, y, 0.9, 20.0), manual, atol=1e-6)


def test_multi_teacher_weights_and_mixture():
    y = torch.tensor([0, 1])
    good = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    bad = torch.tensor([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]])
    w = mix_weights([good, bad], y, "confidence")
    assert torch.allclose(w.sum(0), torch.ones(2)) and (w[0] > w[1]).all()  # CA-MKD favours the correct teacher
    assert torch.allclose(mix_weights([good, bad], y, "average"), torch.full((2, 2), 0.5))
    T = 4.0
    mixed = mix_logits([good, bad], w, T)
    expected = w[0, :, None] * F.softmax(good / T, 1) + w[1, :, None] * F.softmax(bad / T, 1)
    assert torch.allclose(F.softmax(mixed / T, 1), expected, atol=1e-6)


def test_views():
    norm_rgb = compute_normalization_like(3)
    x = torch.randn(2, 3, 16, 16)
    g = View("grayscale", norm_rgb)(x)
    px = g * torch.tensor(norm_rgb.std).view(1, 3, 1, 1) + torch.tensor(norm_rgb.mean).view(1, 3, 1, 1)
    assert torch.allclose(px[:, 0], px[:, 1], atol=1e-5) and torch.allclose(px[:, 1], px[:, 2], atol=1e-5)
    low = View("lowres:4", norm_rgb)(x)
    assert low.shape == x.shape and not torch.allclose(low, x)
    assert torch.equal(View("identity", norm_rgb)(x), x)
    with pytest.raises(EdgekdError, match="unknown view"):
        View("sepia", norm_rgb)


def compute_normalization_like(c):
    from edgekd.data import Normalization

    return Normalization(mean=[0.5] * c, std=[0.25] * c)


def test_find_stages_on_zoo_models():
    names = [n for n, _ in find_stages(create_model("cnn_small", num_classes=10, in_channels=1), (1, 8, 8))]
    assert names == ["stage1", "stage2", "stage3"]
    names = [n for n, _ in find_stages(create_model("resnet8", num_classes=10), (3, 32, 32))]
    assert names == ["layer1", "layer2", "layer3"]


@pytest.fixture(scope="module")
def digits():
    data = load_data("digits", val_fraction=0.2, seed=0)
    return data, compute_normalization(data.train)


def test_cskd_partners_share_the_class(digits):
    data, norm = digits
    hook = CSKDHook()
    setup = TrainSetup(
        create_model("cnn_tiny", num_classes=10, in_channels=1),
        data.train,
        data.val,
        norm,
        RunConfig().distill,
        0,
        torch.device("cpu"),
    )
    hook.attach(setup.student, setup)
    idx = torch.arange(0, 200, 7)
    partners = hook._partners(idx, epoch=0)
    assert torch.equal(data.train.labels[partners], data.train.labels[idx])
    assert not torch.equal(partners, idx)


def old_task_top1(model, split, norm) -> float:
    """LwF evaluates the old task on its own outputs (the first 5 logits), as a multi-head model."""
    model.eval()
    with torch.no_grad():
        pred = model(norm.normalize(split.images))[:, :5].argmax(1)
    return float((pred == split.labels).float().mean())


def test_lifelong_lwf_remembers_old_classes_better_than_finetuning(digits):
    """Old model on digits 0-4; extend to 0-9 training on 5-9 only, with and without LwF."""
    from edgekd.data.splits import take

    data, norm = digits
    old_tr = take(data.train, (data.train.labels < 5).nonzero().flatten().numpy())
    new_tr = take(data.train, (data.train.labels >= 5).nonzero().flatten().numpy())
    old_val = take(data.val, (data.val.labels < 5).nonzero().flatten().numpy())
    cfg = RunConfig().distill.model_copy(update={"epochs": 6, "ce_weight": 1.0, "methods": []})
    torch.manual_seed(0)
    old = create_model("cnn_small", num_classes=5, in_channels=1)
    train(TrainSetup(old, old_tr, old_val, norm, cfg, 0, torch.device("cpu")))
    assert evaluate(old, old_val, norm, torch.device("cpu"))["top1"] > 0.9
    accs = {}
    for name, hooks in (("finetune", []), ("lwf", [LwFHook(T=2.0, weight=1.0)])):
        model = extend_classifier(old, 10)
        assert model.fc.out_features == 10 and torch.equal(model.fc.weight[:5], old.fc.weight)
        setup = TrainSetup(
            model,
            new_tr,
            data.val,
            norm,
            cfg.model_copy(update={"epochs": 3}),
            0,
            torch.device("cpu"),
            teacher=old if hooks else None,
            hooks=hooks,
        )
        result = train(setup)
        assert ("lwf" in result["history"][-1]["train_loss"]) == bool(hooks)
        accs[name] = old_task_top1(model, old_val, norm)
    assert accs["lwf"] > accs["finetune"] + 0.1, accs
    z = torch.randn(3, 10)
    assert lwf_loss(z, z[:, :5].clone()).abs() < 1e-6


def test_byot_terms_follow_the_authors_code_and_do_not_swamp_the_student():
    """Pooled features, plain L2 norm over the batch, soft cross-entropy without T^2, no feature term
    on the shallowest head; the hint's gradient on the student stays below the CE's (a squared
    hint summed over feature maps was 57x it and cost 19 points on CIFAR-10)."""
    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=10, in_channels=3)
    hook = BYOTHook((3, 32, 32), 10)
    hook.build(student)
    hook.capture = Capture(student, hook.stage_names)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    logits = student(x)
    terms = hook.terms(x, y, None, logits, None, 0)
    feats = [hook.capture.out[n] for n in hook.stage_names]
    deep_f = feats[-1].mean((2, 3)).detach()
    (_, q0), (f1, q1) = hook.heads[0](feats[0]), hook.heads[1](feats[1])
    p_c = F.softmax(logits.detach() / 3, 1)
    soft_ce = [-(p_c * F.log_softmax(q / 3, 1)).sum(1).mean() for q in (q0, q1)]
    entropy = -(p_c * p_c.log()).sum(1).mean()
    torch.testing.assert_close(terms["byot_kd"], 0.3 * sum(h - entropy for h in soft_ce))
    torch.testing.assert_close(terms["byot_hint"], 0.03 * (hook.heads[1].adapt(f1) - deep_f).pow(2).sum().sqrt())
    params = list(student.parameters())

    def grad_norm(value: torch.Tensor) -> float:
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        return math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))

    assert grad_norm(terms["byot_hint"]) < grad_norm(F.cross_entropy(logits, y))


# ---- end to end through the config (stages teacher -> distill [-> export]) -------------------
def test_byot_heads_train_and_are_absent_from_the_export(tmp_path, digits_teacher):
    m = run_stages(
        tmp_path / "run", digits_teacher, {**FAST, "distill.scheme": "byot"}, ("teacher", "distill", "export")
    )
    assert m["scheme"] == "byot" and len(m["byot"]["heads"]) == 2 and m["byot"]["heads"][0]["parameters"] > 1000
    assert {"byot_ce", "byot_kd", "byot_hint"} <= set(m["history"][-1]["train_loss"])
    plain = create_model("cnn_small", num_classes=10, in_channels=1)
    saved = load_model_file(tmp_path / "run" / "distill" / "student.pt").model
    assert set(saved.state_dict()) == set(plain.state_dict())
    graph = onnx.load(str(tmp_path / "run" / "export" / "model_fp32.onnx")).graph
    onnx_params = sum(math.prod(t.dims) for t in graph.initializer)
    plain_params = sum(p.numel() for p in plain.parameters())
    head_params = sum(h["parameters"] for h in m["byot"]["heads"])
    assert onnx_params <= plain_params + 256 < plain_params + head_params  # BN folding may change a few
    assert len(graph.output) == 1 and graph.output[0].type.tensor_type.shape.dim[1].dim_value == 10


@pytest.mark.parametrize("scheme", ["cskd", "tfkd"])
def test_teacher_free_self_distillation(tmp_path, digits_teacher, scheme):
    m = run_stages(tmp_path / "run", digits_teacher, {**FAST, "distill.scheme": scheme})
    assert (
        m["scheme"] == scheme
        and scheme in m["history"][-1]["train_loss"]
        and "kd" not in m["history"][-1]["train_loss"]
    )
    assert m["val_top1"] > 0.2


def test_dml_trains_peers(tmp_path, digits_teacher):
    m = run_stages(
        tmp_path / "run", digits_teacher, {**FAST, "distill.scheme": "dml", "distill.dml.archs": ["cnn_tiny"]}
    )
    assert m["dml"]["peers"] == ["cnn_small", "cnn_tiny"] and len(m["dml"]["peers_val_top1"]) == 2
    assert m["val_top1"] == m["dml"]["peers_val_top1"][0] > 0.2
    assert load_model_file(tmp_path / "run" / "distill" / "student.pt").arch["name"] == "cnn_small"


def test_multi_teacher(tmp_path, digits_teacher):
    m = run_stages(
        tmp_path / "run",
        digits_teacher,
        {**FAST, "distill.scheme": "multi_teacher", "distill.multi_teacher.checkpoints": [str(digits_teacher)]},
    )
    assert m["multi_teacher"]["teachers"] == 2 and "kd" in m["history"][-1]["train_loss"]
    assert m["val_top1"] > 0.2


def test_multi_teacher_needs_teachers(tmp_path, digits_teacher):
    with pytest.raises(EdgekdError, match="multi_teacher needs more teachers"):
        run_stages(tmp_path / "run", digits_teacher, {**FAST, "distill.scheme": "multi_teacher"})


@pytest.mark.parametrize("on", ["logits", "embedding"])
def test_adversarial(tmp_path, digits_teacher, on):
    m = run_stages(
        tmp_path / "run", digits_teacher, {**FAST, "distill.scheme": "adversarial", "distill.adversarial.on": on}
    )
    assert "adv" in m["history"][-1]["train_loss"] and math.isfinite(m["adversarial"]["last_discriminator_loss"])
    assert m["val_top1"] > 0.2


def test_cross_modal_lowres_student(tmp_path, digits_teacher):
    m = run_stages(
        tmp_path / "run",
        digits_teacher,
        {**FAST, "distill.scheme": "cross_modal", "distill.cross_modal.student_view": "lowres:4"},
    )
    assert m["cross_modal"]["student_view"] == "lowres:4" and "kd" in m["history"][-1]["train_loss"]


def test_data_free_reads_no_training_image(tmp_path, digits_teacher):
    m = run_stages(
        tmp_path / "run",
        digits_teacher,
        {
            **FAST,
            "distill.scheme": "data_free",
            "distill.data_free.samples": 64,
            "distill.data_free.batch_size": 32,
            "distill.data_free.iterations": 10,
            "distill.batch_size": 32,
            "quantize.sensitivity": False,
        },
        ("teacher", "distill", "quantize"),
    )
    d = m["data_free"]
    assert d["samples"] == 64 and d["real_training_images_used"] == 0
    with __import__("numpy").load(tmp_path / "run" / "distill" / "synthetic.npz") as z:
        assert z["x"].shape == (64, 1, 8, 8) and z["x"].dtype.name == "uint8" and sorted(set(z["y"])) == list(range(10))
    # the INT8 copy is calibrated and fine-tuned on the synthetic images too
    q = json.loads((tmp_path / "run" / "quantize" / "metrics.json").read_text())
    assert q["calibration_source"] == "synthetic (data-free)" and 0 < q["calibration_images"] <= 64


def test_takd_assistant_via_cli(tmp_path, cli, digits_teacher):
    out = tmp_path / "run"
    more = ("--assistant", "cnn_small", *sets("distill.guard.mode='off'"), "--quiet")
    result = cli(*quick_compress(digits_teacher, out, *more, student="cnn_tiny"))
    assert result.exit_code == 0, result.output
    assert (out / "distill" / "assistant.pt").is_file()
    assistant = load_model_file(out / "distill" / "assistant.pt")
    assert assistant.arch["name"] == "cnn_small"
    report = (out / "report.md").read_text()
    assert "Teacher assistant (TAKD): cnn_small" in report


def test_cli_scheme_flag_and_bad_scheme(tmp_path, cli, digits_teacher):
    result = cli("compress", "--teacher", digits_teacher, "--scheme", "nope", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "distill.scheme" in result.output and "offline" in result.output


@pytest.fixture(scope="module")
def old_digits_teacher(tmp_path_factory, digits) -> Path:
    """The old model of lifelong learning: cnn_small trained on digits 0-4 only, saved as an edgekd checkpoint."""
    from edgekd.data.splits import take
    from edgekd.models.checkpoint import save_model

    data, norm = digits
    old_tr = take(data.train, (data.train.labels < 5).nonzero().flatten().numpy())
    cfg = RunConfig().distill.model_copy(update={"epochs": 6, "ce_weight": 1.0, "methods": []})
    torch.manual_seed(0)
    old = create_model("cnn_small", num_classes=5, in_channels=1)
    train(TrainSetup(old, old_tr, old_tr, norm, cfg, 0, torch.device("cpu")))
    path = tmp_path_factory.mktemp("old") / "old5.pt"
    spec = {"shape": list(data.input_shape), "mean": norm.mean, "std": norm.std}
    save_model(path, old, input_spec=spec, classes=data.classes[:5])
    return path


def test_lifelong_through_the_cli_grows_the_teacher_and_keeps_the_old_task(tmp_path, cli, old_digits_teacher):
    out = tmp_path / "run"
    result = cli(
        "compress", "--teacher", old_digits_teacher, "--scheme", "lifelong", "--epochs", "3", "--no-quantize",
        "--out", out, "--quiet", "--set", "bench.runs=50", "--set", "bench.sessions=1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert "search" not in manifest["stages"]  # no --student, yet no search: the student is the grown teacher
    m = json.loads((out / "distill" / "metrics.json").read_text())
    assert m["scheme"] == "lifelong" and "guard" not in m
    assert "lwf" in m["history"][-1]["train_loss"]
    info = m["lifelong"]
    assert info["old_classes"] == 5 and info["new_classes"] == 5
    assert info["teacher_old_task_top1"] > 0.9 and info["student_old_task_top1"] > 0.85  # the old task is kept
    assert m["val_top1"] > 0.8  # and the new classes are learnt (the teacher alone cannot exceed 0.5)
    student = load_model_file(out / "distill" / "student.pt")
    assert student.arch["name"] == "cnn_small" and student.arch["num_classes"] == 10
    teacher = json.loads((out / "teacher" / "teacher.json").read_text())
    assert teacher["val_top1"] > 0.9  # judged on its own five classes


def test_lifelong_refuses_a_teacher_that_already_knows_every_class(tmp_path, cli, digits_teacher):
    result = cli("compress", "--teacher", digits_teacher, "--scheme", "lifelong", "--out", tmp_path / "r", "--quiet")
    assert result.exit_code == 2
    assert "scheme lifelong grows the teacher to new classes" in result.output
    assert not (tmp_path / "r" / "distill").exists()
