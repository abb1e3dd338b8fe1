"""Stage ``search``: find the student, the best model the teacher can teach within the latency budget.

Runs when no student was named (``student.arch`` is "auto") and ``search.enabled`` is set;
otherwise it records why it was skipped and the distill stage uses the named (or usual) student.
Writes ``search/trials.jsonl``, ``search/best_arch.json``, ``search/pareto.png`` and
``search/search.json`` (the summary). A cut-off search resumes from its journal (``--resume``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgekd.config import RunConfig, build_config, read_yaml
from edgekd.data import augment_kwargs
from edgekd.distill.trainer import resolve_device
from edgekd.io import atomic_write_json
from edgekd.rundir import RunDir
from edgekd.stage import Stage, StageContext, StageResult
from edgekd.stages.common import (
    checked_teacher,
    checked_teacher_for,
    normalization_from_teacher_json,
    suggest_student,
)


def search_active(config: RunConfig) -> bool:
    return config.student.arch == "auto" and config.search.enabled and config.distill.scheme != "lifelong"


def _skip_reason(config: RunConfig) -> str:
    if config.distill.scheme == "lifelong":
        return "scheme lifelong grows the teacher itself"
    if config.student.arch != "auto":
        return "a student was given (--student)"
    return "search.enabled is false"


def build_search(config: RunConfig, run: RunDir, out_dir: Path, reporter=None):
    """The :class:`~edgekd.nas.search.Search` of a run (its teacher, data, target and config)."""
    from edgekd.nas.proxy import Proxy
    from edgekd.nas.search import Search
    from edgekd.targets import load_target

    teacher, data = checked_teacher_for(run, config)
    norm = normalization_from_teacher_json(run.stage_dir("teacher"))
    precision = config.search.precision or load_target(config.target).precision
    proxy = Proxy.build(
        teacher.model,
        data,
        norm,
        config.search,
        config.seed,
        resolve_device(config.device),
        augment_kwargs(config.data.augment, data.input_shape),
    )
    kwargs = {"reporter": reporter} if reporter is not None else {}
    return Search(
        config.search,
        config.target,
        precision,
        proxy,
        teacher.model,
        out_dir,
        seed=config.seed,
        extra_zoo=[suggest_student(teacher.arch, data.input_shape)],
        run_dir=run.path,
        trial_entry=evaluate_trial,
        **kwargs,
    )


def build_search_for_run(run_path: Path, out_dir: Path):
    """For a trial process of NNI's training service: the search of the run at ``run_path``."""
    run = RunDir(run_path)
    config = build_config(None, None, base=read_yaml(run.config_path))
    return build_search(config, run, out_dir)


def evaluate_trial(model: Any, context: str) -> None:
    """NNI trial entry point for the training-service engines (one process per trial): rebuilds the
    proxy from the run directory, trains the candidate and appends to the shared journal."""
    from edgekd.nas.journal import arch_key
    from edgekd.nas.manager import die_with_parent
    from edgekd.nas.nni_space import report

    if die_with_parent() and os.getppid() == 1:  # a trial does not outlive NNI's manager (which dies with edgekd)
        raise SystemExit("NNI's manager is gone")
    ctx = json.loads(Path(context).read_text())
    search = build_search_for_run(Path(ctx["run_dir"]), Path(ctx["journal"]).parent)
    search.budget_ms = ctx["budget_ms"]
    spec = model.arch_spec
    done = search.journal.by_key("nas").get(arch_key(spec))
    if done and done.get("status") == "trained":
        report(done["proxy_top1"])
        return
    rec = search._score_and_record(
        "nas", spec["name"], spec, search.cost(spec), strategy=search.config.strategy, pid=os.getpid()
    )
    report(rec["proxy_top1"])


def skip_unless_active(ctx: StageContext) -> StageResult | None:
    """When the search is off for this run: says why, writes ``search.json`` so, and returns the skipped
    result; None when the search runs. Shared by every task's search stage."""
    reason = None if search_active(ctx.config) else _skip_reason(ctx.config)
    if reason is None:
        return None
    ctx.reporter.info(f"[dim]search: skipped, {reason}[/dim]")
    atomic_write_json(ctx.dir / "search.json", {"skipped": True, "reason": reason})
    return StageResult(metrics={"skipped": True, "reason": reason})


class SearchStage(Stage):
    name = "search"
    config_keys = ("data", "student", "search", "seed", "device", "target")
    needs = ("teacher",)

    def check(self, config, run):
        if not search_active(config):
            return
        from edgekd.targets import load_target

        load_target(config.target)
        resolve_device(config.device)
        checked_teacher_for(run, config)

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.config
        if (skipped := skip_unless_active(ctx)) is not None:
            return skipped
        checked_teacher(ctx)
        ctx.upstream("teacher")
        search = build_search(cfg, ctx.run, ctx.dir, ctx.reporter)
        metrics = search.run()
        atomic_write_json(ctx.dir / "search.json", {"skipped": False, **metrics})
        ctx.reporter.info(
            f"search: chose {metrics['best']} ({metrics['best_source']}): proxy top-1 "
            f"{100 * metrics['best_proxy_top1']:.2f}% at {metrics['best_latency_ms']:.3g} ms (budget "
            f"{metrics['budget_ms']:.3g} ms, modelled), {metrics['trials_trained']} trials in {metrics['seconds']:.0f}s"
        )
        return StageResult(metrics=metrics)
