"""The trainer's speed settings (edgekd.distill.speed): fp32 stays the references' plain loop, bf16
trains on CPU, fp16 asks for CUDA, channels_last leaves every feature loss where it was."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgekd.config import DistillConfig, build_config
from edgekd.data import BatchIterator, compute_normalization, load_data
from edgekd.distill import functional as EF
from edgekd.distill import speed
from edgekd.distill.methods import bind_methods, build_method
from edgekd.distill.trainer import TrainSetup, train
from edgekd.errors import EdgekdError
from edgekd.models import create_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    data = load_data("digits", seed=0, max_train_samples=96)
    return data.train, data.val, compute_normalization(data.train)


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    teacher = create_model("cnn_medium", num_classes=10, in_channels=1).eval()
    student = create_model("cnn_small", num_classes=10, in_channels=1)
    return student, teacher


def test_fp32_default_is_the_plain_loop(digits):
    """fp32 (the default): one epoch of 0.1 CE + 0.9 KD through the trainer gives exactly the weights of
    a hand-written loop in NCHW (no autocast, no scaler, the teacher without grad), and the default
    channels_last the same weights up to float rounding."""
    train_split, val_split, norm = digits
    cfg = DistillConfig(epochs=1, batch_size=32, schedule="constant", weight_decay=0.0, momentum=0.0)
    assert (cfg.precision, cfg.channels_last, cfg.compile) == ("fp32", None, False)
    assert speed.use_channels_last(cfg.channels_last, CPU)  # auto: on (measured faster on this CPU)
    student, teacher = _pair()
    ref_student = create_model("cnn_small", num_classes=10, in_channels=1)
    ref_student.load_state_dict(student.state_dict())
    default_student = create_model("cnn_small", num_classes=10, in_channels=1)
    default_student.load_state_dict(student.state_dict())
    nchw = cfg.model_copy(update={"channels_last": False})
    train(TrainSetup(student, train_split, val_split, norm, nchw, 0, CPU, teacher, [(build_method("kd"), 0.9)]))
    train(TrainSetup(default_student, train_split, val_split, norm, cfg, 0, CPU, teacher, [(build_method("kd"), 0.9)]))

    torch.manual_seed(0 * 1000 + 0)  # the trainer's per-epoch seed
    opt = torch.optim.SGD(ref_student.parameters(), lr=cfg.lr)
    ref_student.train()
    batches = BatchIterator(
        train_split, 32, shuffle=True, seed=0, epoch=0, normalization=norm, drop_last=True, with_index=True
    )
    for x, y, _ in batches:
        logits = ref_student(x)
        with torch.no_grad():
            t = teacher(x)
        loss = 0.1 * F.cross_entropy(logits, y) + 0.9 * EF.kd(logits, t, 4.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for (name, a), b in zip(student.state_dict().items(), ref_student.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # NCHW fp32: bit for bit the plain loop
    for (name, a), b in zip(default_student.state_dict().items(), ref_student.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), name  # channels_last: float rounding only


def test_bf16_trains_on_cpu_in_bf16(digits):
    train_split, val_split, norm = digits
    student, teacher = _pair()
    seen = []
    student.register_forward_hook(lambda m, i, o: seen.append(o.dtype) if m.training else None)
    cfg = DistillConfig(epochs=1, batch_size=32, precision="bf16", methods=[{"name": "kd"}, {"name": "at"}])
    methods = [(build_method("kd"), 0.9), (build_method("at"), 1000.0)]
    result = train(TrainSetup(student, train_split, val_split, norm, cfg, 0, CPU, teacher, methods))
    assert seen and set(seen) == {torch.bfloat16}  # the student's forward ran under autocast
    losses = result["history"][0]["train_loss"]
    assert set(losses) == {"ce", "kd", "at"} and all(v > 0 and v == v for v in losses.values())
    assert all(p.dtype == torch.float32 for p in student.parameters())  # master weights stay float32


def test_fp16_needs_cuda_and_bad_precision_is_one_line():
    with pytest.raises(EdgekdError, match="fp16 needs a CUDA device"):
        speed.check_precision("fp16", CPU)
    with pytest.raises(EdgekdError, match="distill.precision"):
        build_config(None, {"distill.precision": "int8"})
    cfg = build_config(None, {"distill.precision": "bf16", "distill.channels_last": True, "distill.compile": True})
    assert (cfg.distill.precision, cfg.distill.channels_last, cfg.distill.compile) == ("bf16", True, True)


@pytest.mark.parametrize("name", ["at", "nst", "fsp", "fitnet", "sp", "rkd", "pkt", "cc"])
def test_channels_last_keeps_feature_losses(name):
    """The same weights and batch in NCHW and NHWC: taps (flattened, reshaped, pooled by the methods)
    give the same loss within float32 rounding."""
    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=10, in_channels=3).eval()
    teacher = create_model("resnet20", num_classes=10, in_channels=3).eval()
    x = torch.randn(8, 3, 32, 32)
    method = build_method(name)
    s_col, t_col = bind_methods([method], student, teacher, None, x[:2])
    y = torch.arange(8) % 10
    with torch.no_grad():
        ref = method(s_col(x), t_col(x), y, 0)[name]
        for model in (student, teacher, method):
            speed.to_memory_format(model, True)
        x_cl = speed.batch_format(x, True)
        s_out = s_col(x_cl)
        for f in s_out.get("stages", []):
            assert f.is_contiguous(memory_format=torch.channels_last) and not f.is_contiguous()  # really NHWC
        got = method(s_out, t_col(x_cl), y, 0)[name]
    s_col.close()
    t_col.close()
    assert got.item() == pytest.approx(ref.item(), rel=1e-4, abs=1e-7)


def test_channels_last_training_hands_back_contiguous_models(digits):
    train_split, val_split, norm = digits
    student, teacher = _pair()
    cfg = DistillConfig(epochs=1, batch_size=32, channels_last=True, methods=[{"name": "at"}])
    result = train(
        TrainSetup(student, train_split, val_split, norm, cfg, 0, CPU, teacher, [(build_method("at"), 1000.0)])
    )
    assert result["history"][0]["train_loss"]["at"] > 0
    for model in (student, teacher):
        assert all(p.is_contiguous() for p in model.parameters())


def test_teacher_taps_leave_inference_mode():
    with torch.inference_mode():
        t = {"logits": torch.randn(2, 3), "stages": [torch.randn(2, 4, 2, 2)]}
    out = speed.from_inference(t)
    assert not out["logits"].is_inference() and not out["stages"][0].is_inference()
    head = torch.nn.Linear(3, 2)
    head(out["logits"]).sum().backward()  # autograd may save it (CRD's teacher-side head)


def test_cli_speed_flags_reach_the_config(cli, tmp_path):
    """--precision/--channels-last/--compile are distill.* settings; a bad precision is one line, exit 2."""
    from edgekd.cli.options import _speed_overrides

    assert _speed_overrides("bf16", True, True) == {
        "distill.precision": "bf16",
        "distill.channels_last": True,
        "distill.compile": True,
    }
    assert _speed_overrides(None, None, False) == {
        "distill.precision": None,
        "distill.channels_last": None,
        "distill.compile": None,
    }
    teacher = tmp_path / "t.pt"
    teacher.write_bytes(b"")
    result = cli("compress", "--teacher", teacher, "--precision", "int8", "--out", tmp_path / "run")
    assert result.exit_code == 2 and "distill.precision: 'int8' is not allowed" in result.output
    assert "Traceback" not in result.output
