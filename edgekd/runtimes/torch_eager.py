"""PyTorch eager as a bench runtime: the teacher and student modules themselves, on CPU or CUDA.

``torch`` runs FP32 on the CPU with ``threads`` intra-op threads; ``torch-cuda`` runs FP32 and
FP16 (``module.half()``, inputs cast to half) on the first CUDA GPU and synchronises the device
after every timed run, so a time covers the whole inference. Peak GPU memory is
``torch.cuda.max_memory_allocated`` over loading and running the model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from edgekd.models.prepare import cpu_eval_copy
from edgekd.runtimes.base import Candidate, ModelFiles, Runner, Runtime, cuda_unavailable


class TorchRunner(Runner):
    def __init__(self, module, *, device: str, half: bool):
        self.device = device
        self.provider = f"torch {torch.__version__} ({device}{', fp16' if half else ''})"
        self.dtype = torch.float16 if half else torch.float32
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        model = cpu_eval_copy(module).to(device)
        self.model = model.half() if half else model

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        elif isinstance(out, tuple | list):
            out = out[0]
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device, self.dtype)
            return self._logits(xt).float().cpu().numpy()

    def timer(self, x: np.ndarray) -> Callable[[], None]:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device, self.dtype)
        cuda = self.device == "cuda"

        def once() -> None:
            with torch.inference_mode():
                self._logits(xt)
            if cuda:
                torch.cuda.synchronize()

        return once

    def gpu_peak_mib(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 2**20 if self.device == "cuda" else None

    def close(self) -> None:
        del self.model
        if self.device == "cuda":
            torch.cuda.empty_cache()


def _torch(models: ModelFiles, formats: tuple[str, ...]) -> list[Candidate]:
    return [Candidate(name, fmt, None) for fmt in formats for name in models.torch_models]


class TorchCPU(Runtime):
    name = "torch"

    def candidates(self, models):
        return _torch(models, ("pytorch-fp32",))

    def open(self, candidate, models, *, threads):
        if threads:
            torch.set_num_threads(threads)
        return TorchRunner(models.torch_models[candidate.model](), device="cpu", half=False)


class TorchCUDA(Runtime):
    name = "torch-cuda"
    device = "cuda"

    def unavailable(self):
        return cuda_unavailable()

    def candidates(self, models):
        return _torch(models, ("pytorch-fp32", "pytorch-fp16"))

    def open(self, candidate, models, *, threads):
        module = models.torch_models[candidate.model]()
        return TorchRunner(module, device="cuda", half=candidate.format == "pytorch-fp16")
