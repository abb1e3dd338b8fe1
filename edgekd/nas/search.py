"""The teacher-guided, latency-bounded student search: budget, candidates, journal, outputs.

    budget  = search.latency_ms, or search.latency_ratio x the teacher's estimated latency
    for each candidate the NNI strategy proposes:
        estimated latency on the target > budget  -> rejected before training (NNI Filter)
        else                                      -> proxy score: short KD from the teacher
    the hand-picked zoo students that fit the budget get the same proxy, for comparison
    best = highest proxy top-1 under the budget (ties: the faster one)

Writes ``trials.jsonl`` (the journal; a cut-off search resumes from it without retraining),
``best_arch.json`` (an arch spec ``create_model`` builds without NNI) and ``pareto.png``.
NNI itself is only reached through ``edgekd.nas.nni_space``.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.console import Reporter
from edgekd.errors import EdgekdError
from edgekd.io import atomic_write_json
from edgekd.models import create_model
from edgekd.nas.config import SearchConfig
from edgekd.nas.cost import Cost, model_cost, spec_cost, teacher_cost
from edgekd.nas.journal import Journal, arch_key
from edgekd.nas.pareto import plot_pareto
from edgekd.nas.proxy import Proxy
from edgekd.nas.space import cheapest_sample, make_layout, spec_from_sample


def default_zoo(side: int) -> list[str]:
    """Hand-picked students to compare with, by image side (the zoo's small models for that size)."""
    if side <= 16:
        return ["cnn_tiny", "cnn_small", "cnn_medium"]
    if side <= 64:
        return ["resnet8", "resnet14", "resnet20", "resnet8x4", "wrn_16_1", "wrn_16_2", "mobilenetv2"]
    return ["tv:mobilenet_v3_small", "tv:shufflenet_v2_x0_5", "tv:mobilenet_v2", "tv:resnet18"]


def rank_key(rec: dict[str, Any]) -> tuple[float, float]:
    return (rec["proxy_top1"], -rec["latency_ms"])


def with_torch_threads(threads: int | None, fn):
    """``fn()`` with torch's intra-op threads set to ``threads`` (when given), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


@dataclass
class Search:
    """One search over a run's teacher, data and target (see the module docstring)."""

    config: SearchConfig
    target: str
    precision: str
    proxy: Proxy
    teacher_model: Any
    out_dir: Path
    reporter: Reporter = field(default_factory=lambda: Reporter(quiet=True))
    seed: int = 0
    extra_zoo: list[str] = field(default_factory=list)
    run_dir: Path | None = None  # for the trials of NNI's training service
    # NNI's training service runs each trial in its own process through this function(model, context);
    # the search stage supplies it (edgekd.stages.search.evaluate_trial), as it knows how to rebuild a run
    trial_entry: Any = None

    def __post_init__(self) -> None:
        data = self.proxy.data
        self.input_shape = tuple(data.input_shape)
        self.layout = make_layout(len(data.classes), self.input_shape, self.config.families)
        self.journal = Journal(self.out_dir / "trials.jsonl")
        self._costs: dict[str, Cost] = {}
        self.counts = {"trained": 0, "replayed": 0, "rejected": 0, "duplicates": 0}
        self._submitted: set[str] = set()

    # -- cost and budget ---------------------------------------------------------------------
    def cost(self, spec: dict[str, Any] | str) -> Cost:
        key = arch_key(spec)
        if key not in self._costs:
            self._costs[key] = spec_cost(spec, self.target, self.input_shape, self.precision)
        return self._costs[key]

    def resolve_budget(self) -> tuple[float, Cost | None]:
        """The budget and the teacher's cost (None when --latency-ms is given and the teacher cannot be read)."""
        try:
            t_cost = teacher_cost(self.teacher_model, self.target, self.input_shape, self.precision)
        except EdgekdError:
            if self.config.latency_ms is None:
                raise
            return float(self.config.latency_ms), None
        budget = self.config.latency_ms or self.config.latency_ratio * t_cost.latency_ms
        return float(budget), t_cost

    # -- journal -----------------------------------------------------------------------------
    def _record(self, kind: str, name: str, spec: Any, cost: Cost, status: str, **extra: Any) -> dict[str, Any]:
        rec = {
            "key": arch_key(spec),
            "kind": kind,
            "name": name,
            "arch": spec,
            **cost.to_dict(),
            "target": self.target,
            "precision": self.precision,
            "budget_ms": self.budget_ms,
            "status": status,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **extra,
        }
        self.journal.append(rec)
        return rec

    def _score_and_record(self, kind: str, name: str, spec: Any, cost: Cost, **extra: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        scored = self.proxy.score(spec)
        rec = self._record(
            kind, name, spec, cost, "trained", **scored, seconds=round(time.perf_counter() - t0, 3), **extra
        )
        self.counts["trained"] += 1
        return rec

    # -- the three kinds of candidate --------------------------------------------------------
    def _teacher_row(self, t_cost: Cost | None, done: dict[str, dict[str, Any]]) -> None:
        if t_cost is not None and not any(r.get("kind") == "teacher" for r in done.values()):
            self._record(
                "teacher", "teacher", {"name": "teacher"}, t_cost, "reference", proxy_top1=self.proxy.teacher_top1()
            )

    def _zoo(self, done: dict[str, dict[str, Any]]) -> None:
        names = list(dict.fromkeys((self.config.compare_zoo or default_zoo(self.layout["side"])) + self.extra_zoo))
        for name in names:
            try:
                spec = create_model(
                    name, num_classes=self.layout["num_classes"], in_channels=self.layout["in_channels"]
                ).arch_spec
                cost = self.cost(spec)
            except Exception as exc:  # noqa: BLE001 - a zoo model that does not fit these images is skipped
                self.reporter.info(f"search: zoo model {name} skipped ({str(exc).splitlines()[0][:100]})")
                continue
            if arch_key(spec) in done:
                continue
            if cost.latency_ms > self.budget_ms:
                self._record("zoo", name, spec, cost, "rejected")
                continue
            rec = self._score_and_record("zoo", name, spec, cost)
            self.reporter.info(
                f"search: zoo {name}: proxy top-1 {100 * rec['proxy_top1']:.2f}% at {cost.latency_ms:.3g} ms "
                f"({rec['seconds']:.1f}s)"
            )

    def _accept(self, sample: dict[str, Any]) -> bool:
        """NNI Filter: False (reject before training) when the estimated latency exceeds the budget."""
        try:
            return self._accept_inner(sample)
        except BaseException as exc:
            self._failure = self._failure or exc
            raise

    def _accept_inner(self, sample: dict[str, Any]) -> bool:
        spec = spec_from_sample(self.layout, sample)
        key = arch_key(spec)
        if key in self._submitted:
            # Another sample of the same architecture (choices it does not use differ): not a new trial.
            self.counts["duplicates"] += 1
            return False
        cost = self.cost(spec)
        if cost.latency_ms <= self.budget_ms:
            self._submitted.add(key)
            return True
        if key not in self._rejected:
            self._rejected.add(key)
            self.counts["rejected"] += 1
            if key not in self._done:
                self._record("nas", spec["name"], spec, cost, "rejected", sample=sample)
        return False

    def _evaluate(self, model: Any) -> None:
        """NNI evaluator (sequential engine): proxy-train the frozen candidate, report its score.

        NNI's engine logs a Ctrl-C or an error in a trial and ends the experiment normally; the
        exception is kept here and raised again once NNI returns, so a cut-off search fails (and
        resumes) instead of finishing with fewer trials."""
        try:
            self._evaluate_inner(model)
        except BaseException as exc:
            self._failure = self._failure or exc
            raise

    def _evaluate_inner(self, model: Any) -> None:
        from edgekd.nas.nni_space import report

        spec = model.arch_spec
        key = arch_key(spec)
        if key in self._done and self._done[key].get("status") == "trained":
            self.counts["replayed"] += 1
            report(self._done[key]["proxy_top1"])
            return
        self._trial += 1
        cost = self.cost(spec)
        rec = self._score_and_record("nas", spec["name"], spec, cost, trial=self._trial, strategy=self.config.strategy)
        self._done[key] = rec
        self.reporter.info(
            f"search: trial {self._trial}/{self.config.trials} {spec['name']}: proxy top-1 "
            f"{100 * rec['proxy_top1']:.2f}% at {cost.latency_ms:.3g} ms ({rec['seconds']:.1f}s)"
        )
        report(rec["proxy_top1"])

    # -- the whole search --------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        return with_torch_threads(self.config.threads, self._run)

    def _run(self) -> dict[str, Any]:
        from edgekd.nas import nni_space

        t0 = time.perf_counter()
        self.budget_ms, t_cost = self.resolve_budget()
        self.reporter.info(
            f"search: budget {self.budget_ms:.4g} ms on {self.target} ({self.precision}, batch 1, "
            + (f"{t_cost.latency_source}); teacher {t_cost.latency_ms:.4g} ms" if t_cost else "given)")
        )
        self._check_feasible()
        done = self.journal.by_key()
        if done:
            self.reporter.info(f"search: resuming; {len(done)} candidates already in trials.jsonl")
        self._done = {k: v for k, v in done.items() if v.get("kind") == "nas"}
        self._rejected: set[str] = set()
        self._trial = sum(1 for r in self._done.values() if r.get("status") == "trained")
        self._teacher_row(t_cost, done)
        self._zoo(done)
        strategy = nni_space.make_strategy(
            self.config.strategy,
            trials=self.config.trials,
            seed=self.seed,
            accept=self._accept,
            population=self.config.population,
        )
        self._failure: BaseException | None = None
        if self.config.engine == "sequential":
            with tempfile.TemporaryDirectory(prefix="edgekd-nni-") as workdir:
                nni_space.run_experiment(
                    self.layout, self._evaluate, strategy, trials=self.config.trials, workdir=Path(workdir)
                )
            if self._failure is not None:
                raise self._failure
        else:
            context = self._write_trial_context()
            if self.trial_entry is None:
                raise EdgekdError("search.engine nni-local needs a trial entry point (Search.trial_entry)")
            nni_space.run_experiment(
                self.layout,
                self.trial_entry,
                strategy,
                trials=self.config.trials,
                workdir=self.out_dir.parent / ".search.nni",
                engine="nni-local",
                concurrency=self.config.concurrency,
                port=self.config.port,
                evaluate_kwargs={"context": str(context)},
                on_warning=self.reporter.warn,
            )
        return self.finish(t_cost, time.perf_counter() - t0)

    def _check_feasible(self) -> None:
        """Fail fast, naming the floor, when even the smallest candidate of the space is over budget."""
        floor = min(
            self.cost(spec_from_sample(self.layout, cheapest_sample(self.layout, fam))).latency_ms
            for fam in self.layout["families"]
        )
        if floor > self.budget_ms:
            raise EdgekdError(
                f"the latency budget of {self.budget_ms:.3g} ms on {self.target} is below the fastest searchable "
                f"student ({floor:.3g} ms, modelled); raise --latency-ms / --latency-ratio or pass --student"
            )

    def finish(self, t_cost: Cost | None, seconds: float) -> dict[str, Any]:
        records = self.journal.read()
        trained = [r for r in records if r.get("status") == "trained"]
        nas = [r for r in trained if r["kind"] == "nas" and r["latency_ms"] <= self.budget_ms]
        zoo = [r for r in trained if r["kind"] == "zoo" and r["latency_ms"] <= self.budget_ms]
        if not nas and not zoo:
            raise EdgekdError(
                f"no candidate fits the latency budget of {self.budget_ms:.3g} ms on {self.target}; "
                "raise it (--latency-ms or --latency-ratio) or pass --student"
            )
        best_nas = max(nas, key=rank_key) if nas else None
        best_zoo = max(zoo, key=rank_key) if zoo else None
        best = max([r for r in (best_nas, best_zoo) if r], key=rank_key)
        best_arch = {
            "arch": best["arch"],
            "source": "search" if best["kind"] == "nas" else "zoo",
            "name": best["name"],
            "proxy_top1": best["proxy_top1"],
            "latency_ms": best["latency_ms"],
            "latency_source": best["latency_source"],
            "latency_modelled": True,
            "budget_ms": self.budget_ms,
            "target": self.target,
            "precision": self.precision,
            "parameters": best["parameters"],
            "flops": best["flops"],
        }
        atomic_write_json(self.out_dir / "best_arch.json", best_arch)
        plot_pareto(
            self.out_dir / "pareto.png",
            records,
            budget_ms=self.budget_ms,
            best_key=best["key"],
            title=f"{self.config.strategy} search, {self.config.trials} trials, {self.target} {self.precision}",
        )
        nas_all = [r for r in records if r.get("kind") == "nas"]
        return {
            "budget_ms": self.budget_ms,
            "teacher_latency_ms": t_cost.latency_ms if t_cost else None,
            "latency_source": t_cost.latency_source if t_cost else sorted({r["latency_source"] for r in trained})[0],
            "target": self.target,
            "precision": self.precision,
            "strategy": self.config.strategy,
            "trials_trained": sum(1 for r in nas_all if r.get("status") == "trained"),
            "trials_rejected": sum(1 for r in nas_all if r.get("status") == "rejected"),
            "replayed_from_journal": self.counts["replayed"],
            "duplicate_samples_skipped": self.counts["duplicates"],
            "best": best["name"],
            "best_source": best_arch["source"],
            "best_proxy_top1": best["proxy_top1"],
            "best_latency_ms": best["latency_ms"],
            "best_search_proxy_top1": best_nas["proxy_top1"] if best_nas else None,
            "best_zoo": best_zoo["name"] if best_zoo else None,
            "best_zoo_proxy_top1": best_zoo["proxy_top1"] if best_zoo else None,
            "search_beats_zoo": (
                best_nas is not None and (best_zoo is None or rank_key(best_nas) >= rank_key(best_zoo))
            ),
            "proxy": self.proxy.describe(),
            "seconds": round(seconds, 3),
        }

    # -- NNI training service ----------------------------------------------------------------
    def _write_trial_context(self) -> Path:
        """What a trial process of NNI's training service needs to rebuild this search."""
        ctx = self.out_dir / "trial_context.json"
        atomic_write_json(
            ctx,
            {
                "run_dir": str(self.run_dir),
                "layout": self.layout,
                "budget_ms": self.budget_ms,
                "target": self.target,
                "precision": self.precision,
                "journal": str(self.journal.path),
            },
        )
        return ctx


def check_best_arch(path: Path) -> dict[str, Any]:
    """Read ``best_arch.json``; its arch must build with the zoo (no NNI needed)."""
    info = json.loads(path.read_text())
    create_model(info["arch"])
    return info


__all__ = ["Search", "check_best_arch", "default_zoo", "model_cost"]
