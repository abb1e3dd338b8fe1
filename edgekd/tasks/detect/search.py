"""Stage ``search`` for detectors: the best edge detector the teacher can teach within the latency budget.

Runs when no student was named (``student.arch`` is "auto") and ``search.enabled`` is set, as for
classifiers, through the same NNI engine (``edgekd.nas.nni_space``: a :class:`ChoiceSpace` over
``detect.search``, see search_space.py) and the same journal:

    budget  = search.latency_ms, or search.latency_ratio x the teacher's modelled latency at detect.imgsz
    for each candidate (spec name + input side) the NNI strategy proposes:
        modelled latency on the target > budget  -> rejected before training (NNI Filter)
        else                                      -> proxy: short KD training, mAP on a val subset
    the hand-picked edet_p/n/s (``search.compare_zoo``) that fit the budget get the same proxy
    best = highest proxy mAP under the budget (ties: the faster one)

Writes ``search/trials.jsonl`` (a cut-off search resumes from it without retraining),
``best_arch.json`` (``{"arch": {"name", "imgsz"}, ...}``; distill builds the student from it),
``pareto.png`` and ``search.json``. Only the sequential engine is offered for detectors.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.io import atomic_write_json
from edgekd.nas.cost import Cost, teacher_cost
from edgekd.nas.journal import Journal, arch_key
from edgekd.nas.pareto import plot_pareto
from edgekd.nas.search import with_torch_threads
from edgekd.stage import Stage, StageContext, StageResult
from edgekd.tasks.detect.common import detection_data, hflip_for, teacher_detector
from edgekd.tasks.detect.search_proxy import DetectProxy, detector_cost
from edgekd.tasks.detect.search_space import cheapest_sample, space_choices, spec_from_sample

ZOO = ("edet_p", "edet_n", "edet_s")
SCORE = "proxy_map50_95"


def rank_key(rec: dict[str, Any]) -> tuple[float, float]:
    return (rec[SCORE], -rec["latency_ms"])


class DetectSearch:
    """One detector search over a run's teacher, data, target and config (module docstring)."""

    def __init__(self, config, teacher, data, out_dir: Path, reporter, proxy: DetectProxy | None = None):
        from edgekd.targets import load_target

        self.cfg, self.teacher, self.data, self.out_dir, self.reporter = config, teacher, data, out_dir, reporter
        self.s = config.search
        self.target = config.target
        self.precision = self.s.precision or load_target(config.target).precision
        self.table = space_choices(config.detect.search)
        self.proxy = proxy or DetectProxy.build(teacher, data, config, hflip_for(config.data.source))
        self.journal = Journal(out_dir / "trials.jsonl")
        self._costs: dict[str, Cost] = {}
        self.counts = {"trained": 0, "replayed": 0, "rejected": 0, "duplicates": 0}
        self._submitted: set[str] = set()
        self._rejected: set[str] = set()
        self._failure: BaseException | None = None

    def cost(self, spec: dict[str, Any]) -> Cost:
        key = arch_key(spec)
        if key not in self._costs:
            self._costs[key] = detector_cost(
                spec["name"], int(spec["imgsz"]), self.data.num_classes, self.target, self.precision
            )
        return self._costs[key]

    def resolve_budget(self) -> tuple[float, Cost | None]:
        imgsz = self.cfg.detect.imgsz
        try:
            t_cost = teacher_cost(self.teacher, self.target, (3, imgsz, imgsz), self.precision)
        except EdgekdError:
            if self.s.latency_ms is None:
                raise
            return float(self.s.latency_ms), None
        return float(self.s.latency_ms or self.s.latency_ratio * t_cost.latency_ms), t_cost

    # -- journal -----------------------------------------------------------------------------
    def _record(self, kind: str, spec: dict[str, Any], cost: Cost, status: str, **extra: Any) -> dict[str, Any]:
        rec = {
            "key": arch_key(spec),
            "kind": kind,
            "name": spec["name"],
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

    def _score(self, kind: str, spec: dict[str, Any], cost: Cost, label: str = "", **extra: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        scored = self.proxy.score(spec)
        rec = self._record(kind, spec, cost, "trained", **scored, seconds=round(time.perf_counter() - t0, 3), **extra)
        self.counts["trained"] += 1
        self.reporter.info(
            f"search: {label or kind} {spec['name']} at {spec['imgsz']}px: proxy mAP@[.5:.95] "
            f"{rec[SCORE]:.4f} at {cost.latency_ms:.3g} ms ({rec['seconds']:.1f}s)"
        )
        return rec

    # -- candidates --------------------------------------------------------------------------
    def _teacher_row(self, t_cost: Cost | None, done: dict[str, dict[str, Any]]) -> None:
        if t_cost is None or any(r.get("kind") == "teacher" for r in done.values()):
            return
        spec = {"name": "teacher", "imgsz": self.cfg.detect.imgsz}
        self._record("teacher", spec, t_cost, "reference", **{SCORE: self.proxy.val_map(self.teacher, spec["imgsz"])})

    def _zoo(self, done: dict[str, dict[str, Any]]) -> None:
        names = ZOO if self.s.compare_zoo is None else self.s.compare_zoo
        for name in names:
            spec = {"name": name, "imgsz": self.cfg.detect.imgsz}
            try:
                cost = self.cost(spec)
            except EdgekdError as err:
                self.reporter.info(f"search: zoo model {name} skipped ({err})")
                continue
            if arch_key(spec) in done:
                continue
            if cost.latency_ms > self.budget_ms:
                self._record("zoo", spec, cost, "rejected")
            else:
                self._score("zoo", spec, cost, label="zoo")

    def _accept(self, sample: dict[str, Any]) -> bool:
        """NNI Filter: False (reject before training) when the modelled latency exceeds the budget."""
        try:
            spec = spec_from_sample(sample)
            key = arch_key(spec)
            if key in self._submitted:
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
                    self._record("nas", spec, cost, "rejected", sample=sample)
            return False
        except BaseException as exc:
            self._failure = self._failure or exc
            raise

    def _evaluate(self, model: Any) -> None:
        """NNI evaluator: proxy-train the candidate, report its mAP (errors re-raised after NNI returns)."""
        from edgekd.nas.nni_space import report

        try:
            spec = spec_from_sample(dict(model.chosen))
            key = arch_key(spec)
            if self._done.get(key, {}).get("status") == "trained":
                self.counts["replayed"] += 1
                report(self._done[key][SCORE])
                return
            self._trial += 1
            label = f"trial {self._trial}/{self.s.trials}"
            rec = self._score("nas", spec, self.cost(spec), trial=self._trial, strategy=self.s.strategy, label=label)
            self._done[key] = rec
            report(rec[SCORE])
        except BaseException as exc:
            self._failure = self._failure or exc
            raise

    # -- the whole search --------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        return with_torch_threads(self.s.threads, self._run)

    def _run(self) -> dict[str, Any]:
        from edgekd.nas import nni_space

        t0 = time.perf_counter()
        self.budget_ms, t_cost = self.resolve_budget()
        self.reporter.info(
            f"search: budget {self.budget_ms:.4g} ms on {self.target} ({self.precision}, batch 1, modelled"
            + (f", {t_cost.latency_source}); teacher {t_cost.latency_ms:.4g} ms" if t_cost else ", given)")
        )
        floor_spec = spec_from_sample(cheapest_sample(self.table))
        floor = self.cost(floor_spec).latency_ms
        if floor > self.budget_ms:
            raise EdgekdError(
                f"the latency budget of {self.budget_ms:.3g} ms on {self.target} is below the fastest searchable "
                f"detector ({floor_spec['name']} at {floor_spec['imgsz']}px, {floor:.3g} ms, modelled); raise "
                "--latency-ms / --latency-ratio, shrink detect.search, or pass --student"
            )
        done = self.journal.by_key()
        if done:
            self.reporter.info(f"search: resuming; {len(done)} candidates already in trials.jsonl")
        self._done = {k: v for k, v in done.items() if v.get("kind") == "nas"}
        self._trial = sum(1 for r in self._done.values() if r.get("status") == "trained")
        self._teacher_row(t_cost, done)
        self._zoo(done)
        strategy = nni_space.make_strategy(
            self.s.strategy, trials=self.s.trials, seed=self.cfg.seed, accept=self._accept, population=self.s.population
        )
        with tempfile.TemporaryDirectory(prefix="edgekd-nni-") as workdir:
            nni_space.run_experiment(
                {},
                self._evaluate,
                strategy,
                trials=self.s.trials,
                workdir=Path(workdir),
                space=nni_space.ChoiceSpace(table=self.table),
            )
        if self._failure is not None:
            raise self._failure
        return self.finish(t_cost, time.perf_counter() - t0)

    def finish(self, t_cost: Cost | None, seconds: float) -> dict[str, Any]:
        records = self.journal.read()
        fits = [r for r in records if r.get("status") == "trained" and r["latency_ms"] <= self.budget_ms]
        nas = [r for r in fits if r["kind"] == "nas"]
        zoo = [r for r in fits if r["kind"] == "zoo"]
        if not fits:
            raise EdgekdError(
                f"no candidate fits the latency budget of {self.budget_ms:.3g} ms on {self.target}; "
                "raise it (--latency-ms or --latency-ratio) or pass --student"
            )
        best_nas = max(nas, key=rank_key) if nas else None
        best_zoo = max(zoo, key=rank_key) if zoo else None
        best = max(fits, key=rank_key)
        best_arch = {
            "arch": best["arch"],
            "source": "search" if best["kind"] == "nas" else "zoo",
            "name": best["name"],
            "imgsz": best["arch"]["imgsz"],
            SCORE: best[SCORE],
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
            title=f"detector {self.s.strategy} search, {self.s.trials} trials, {self.target} {self.precision}",
            score_key=SCORE,
            score_label="proxy mAP@[.5:.95] (x100)",
        )
        nas_all = [r for r in records if r.get("kind") == "nas"]
        return {
            "task": "detect",
            "budget_ms": self.budget_ms,
            "teacher_latency_ms": t_cost.latency_ms if t_cost else None,
            "latency_source": t_cost.latency_source if t_cost else best["latency_source"],
            "target": self.target,
            "precision": self.precision,
            "strategy": self.s.strategy,
            "space": self.table,
            "trials_trained": sum(1 for r in nas_all if r.get("status") == "trained"),
            "trials_rejected": sum(1 for r in nas_all if r.get("status") == "rejected"),
            "replayed_from_journal": self.counts["replayed"],
            "duplicate_samples_skipped": self.counts["duplicates"],
            "best": best["name"],
            "best_imgsz": best["arch"]["imgsz"],
            "best_source": best_arch["source"],
            "best_" + SCORE: best[SCORE],
            "best_latency_ms": best["latency_ms"],
            "best_search_" + SCORE: best_nas[SCORE] if best_nas else None,
            "best_zoo": best_zoo["name"] if best_zoo else None,
            "best_zoo_" + SCORE: best_zoo[SCORE] if best_zoo else None,
            "search_beats_zoo": best_nas is not None and (best_zoo is None or rank_key(best_nas) >= rank_key(best_zoo)),
            "proxy": self.proxy.describe(),
            "seconds": round(seconds, 3),
        }


class DetectSearchStage(Stage):
    name = "search"
    config_keys = ("task", "teacher", "data", "student", "search", "seed", "detect", "target")
    needs = ("teacher",)

    def check(self, config, run):
        from edgekd.stages.search import search_active
        from edgekd.targets import load_target

        if not search_active(config):
            return
        load_target(config.target)
        if config.search.engine != "sequential":
            raise EdgekdError(
                "the detector search runs on the sequential engine only; drop --engine / search.engine nni-local"
            )

    def run(self, ctx: StageContext) -> StageResult:
        from edgekd.stages.search import skip_unless_active

        cfg = ctx.config
        if (skipped := skip_unless_active(ctx)) is not None:
            return skipped
        data = detection_data(ctx, cfg)
        teacher, _ = teacher_detector(ctx.run, cfg, data)
        metrics = DetectSearch(cfg, teacher, data, ctx.dir, ctx.reporter).run()
        atomic_write_json(ctx.dir / "search.json", {"skipped": False, **metrics})
        ctx.reporter.info(
            f"search: chose {metrics['best']} at {metrics['best_imgsz']}px ({metrics['best_source']}): proxy "
            f"mAP@[.5:.95] {metrics['best_' + SCORE]:.4f} at {metrics['best_latency_ms']:.3g} ms (budget "
            f"{metrics['budget_ms']:.3g} ms, modelled), {metrics['trials_trained']} trials in {metrics['seconds']:.0f}s"
        )
        return StageResult(metrics=metrics)
