"""What several CLI tests pass: ``--set`` options from a list, and the bench settings that keep a run quick."""

from __future__ import annotations


def sets(*pairs: str) -> list[str]:
    """``sets("a=1", "b=2")`` -> ``["--set", "a=1", "--set", "b=2"]``."""
    return [arg for pair in pairs for arg in ("--set", pair)]


# a run's bench in a few seconds: enough runs to pass its checks, one session, a short throughput
FAST_BENCH_OPTS = tuple(sets("bench.runs=50", "bench.sessions=1", "bench.throughput_runs=3"))


def quick_compress(teacher, out, *more, student: str = "cnn_small") -> list:
    """The arguments of a quick `compress` of ``teacher`` into ``out``: ``student`` for 2 epochs on 400
    images (as ``schemes_helpers.run_stages``), a quick bench, and ``more``."""
    return [
        "compress", "--teacher", teacher, "--student", student, "--epochs", "2", "--max-train-samples", "400",
        "--out", out, *FAST_BENCH_OPTS, *more,
    ]  # fmt: skip
