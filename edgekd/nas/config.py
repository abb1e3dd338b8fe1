"""The ``search`` slice of the config (issue 4: teacher-guided, latency-bounded student search with NNI)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgekd.schema import Strict as _Strict


class SearchConfig(_Strict):
    """The NAS stage: runs when ``student.arch`` is "auto" (no --student) and ``enabled`` is set.

    The latency budget is ``latency_ms``, else ``latency_ratio`` times the teacher's estimated
    latency on the run's target at ``precision`` (default: the target's own precision).
    """

    enabled: bool = True  # False: no search; "auto" picks the usual hand-picked student
    families: list[Literal["mbv", "resnet"]] = ["mbv", "resnet"]
    strategy: Literal["evolution", "random", "tpe"] = "evolution"
    trials: int = Field(20, ge=1)  # candidates trained (rejected ones are not counted)
    latency_ms: float | None = Field(None, gt=0.0)
    latency_ratio: float = Field(0.5, gt=0.0)  # used when latency_ms is not set
    precision: Literal["fp32", "fp16", "int8"] | None = None
    proxy_epochs: int = Field(5, ge=1)
    proxy_train_samples: int | None = Field(1000, ge=10)
    proxy_val_samples: int | None = Field(2000, ge=10)
    proxy_batch_size: int = Field(32, ge=1)
    proxy_lr: float = Field(0.05, gt=0.0)
    population: int | None = Field(None, ge=2)  # evolution; None: trials // 2, between 4 and 20
    compare_zoo: list[str] | None = None  # hand-picked students scored on the same proxy; None: by input size
    threads: int | None = Field(None, ge=1)  # torch threads during the search (1 suits tiny proxies); None: as is
    engine: Literal["sequential", "nni-local"] = "sequential"
    concurrency: int = Field(1, ge=1)  # nni-local only
    port: int = Field(8745, ge=1024, le=65535)  # nni-local only: NNI's manager (listens on all interfaces)
