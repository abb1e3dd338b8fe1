"""The trainer under torchrun (DDP, gloo on CPU): ranks stay in sync and agree on the metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, torch
    from edgekd.config import DistillConfig
    from edgekd.data import compute_normalization, load_data
    from edgekd.distill.trainer import TrainSetup, train
    from edgekd.models import create_model

    torch.set_num_threads(1)
    data = load_data("digits", seed=0)
    torch.manual_seed(0)
    model = create_model("cnn_tiny", num_classes=10, in_channels=1)
    cfg = DistillConfig(epochs=2, batch_size=32, ce_weight=1.0, methods=[])
    result = train(TrainSetup(student=model, train=data.train, val=data.val,
                              normalization=compute_normalization(data.train), config=cfg, seed=0,
                              device=torch.device("cpu")))
    checksum = float(sum(p.double().sum() for p in model.parameters()))
    out = {"rank": int(os.environ["RANK"]), "top1": result["final"]["val_top1"],
           "val_samples": result["history"][-1].get("val_top1"), "checksum": checksum}
    with open(os.path.join(sys.argv[1], f"rank{out['rank']}.json"), "w") as f:
        json.dump(out, f)
    """
)


@pytest.mark.slow
def test_torchrun_two_ranks(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        str(script),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-6)  # DDP kept weights in sync
    assert ranks[0]["top1"] == ranks[1]["top1"] > 0.5  # all-reduced evaluation over both shards
