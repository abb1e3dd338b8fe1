"""Everything edgekd takes from NNI, in one module: the model space, the strategies, the experiment.

NNI 3.0 is the last release (the project is archived upstream), so it is pinned (``nni==3.0`` in
pyproject.toml) and no other edgekd module imports it (a test greps for that): if NNI ever has to
be replaced or patched, this is the one file to change. It works with torch 2.14.1; importing
``nni.nas.nn.pytorch`` needs ``pytorch_lightning``.

- :class:`StudentSpace` is an NNI ``ModelSpace``: per-choice ``nni.choice`` mutables (family,
  input resolution, width multiplier, ResNet stage widths), ``Repeat`` for the depth of each stage
  and a ``LayerChoice`` per MobileNet block over its variants (kernel 3/5/7 x expansion x SE on/off
  x ReLU/Hardswish). Its blocks and networks are the zoo's own (``edgekd.models.searchable``):
  frozen on a sample, the space *is* ``create_model(spec_from_sample(sample))``, module for module.
- :func:`make_strategy`: regularized evolution (default), random, TPE, chained with NNI's
  ``Filter`` middleware so that a candidate over the latency budget is rejected before training.
- :func:`run_experiment`: an NNI ``NasExperiment`` on the sequential engine (one process, no web
  server) or, when asked, on NNI's local training service (``engine="nni-local"``, parallel trial
  processes). The training service starts NNI's manager, a web server that listens on every
  network interface; edgekd starts it only when asked and warns.

Reaching NNI's remote or Kubernetes training services: the trials only need the run directory
(shared storage) and this package installed on the workers; :func:`run_experiment` takes an NNI
``training_service`` config object (``nni.experiment.config.RemoteConfig``,
``KubeflowConfig``, ``FrameworkControllerConfig``, ...) in place of the local one, and everything
else (space, evaluator, strategy, journal) is unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

with warnings.catch_warnings():
    # NNI 3.0 predates torch 2.14 and warns that two of its new classes "are not nn.Modules"; harmless.
    warnings.simplefilter("ignore", RuntimeWarning)
    import nni
    from nni.mutable import ensure_frozen
    from nni.nas import strategy as nni_strategy
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperiment
    from nni.nas.experiment.config import SequentialEngineConfig, TrainingServiceEngineConfig
    from nni.nas.nn.pytorch import LayerChoice, ModelSpace, Repeat
    from nni.nas.space import current_model, model_context
    from nni.nas.strategy.middleware import Chain, Filter

from edgekd.models.searchable import MBConv, NasMobileNet, NasResNet, ResBlock
from edgekd.nas.space import block_variants, choices, mbv_channels, spec_from_sample

STRATEGIES = ("evolution", "random", "tpe")
REJECT_PATIENCE = 1000  # NNI's Filter stops the search after this many rejections in a row


def quiet_nni() -> None:
    """NNI logs every sample at INFO level; edgekd reports progress itself."""
    # Its warnings are expected here too: rejected samples "have no metric", and NNI's default config
    # names a training service that the sequential engine "ignores". Errors still show.
    logging.getLogger("nni").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"nni(\..*)?")


class StudentSpace(ModelSpace):
    """The student search space of one layout (see ``edgekd.nas.space``) as an NNI model space.

    NNI builds it once without a sample (a dry run, every family and every block choice present,
    so ``simplify()`` lists all mutables) and again for each sample inside ``model_context``,
    where each mutable resolves to its chosen value; the frozen instance holds only the chosen
    network, as ``self.net``, and its arch spec as ``self.arch_spec``.
    """

    def __init__(self, layout: dict[str, Any]):
        super().__init__()
        sample = current_model()
        table = choices(layout)
        self.layout = layout

        def pick(label: str) -> Any:
            return ensure_frozen(self.add_mutable(nni.choice(label, table[label])))

        family = pick("family") if "family" in table else layout["families"][0]
        resolution = pick("resolution")
        self.arch_spec = spec_from_sample(layout, sample) if sample is not None else None
        wanted = [family] if sample is not None else list(layout["families"])
        nets = {}
        for fam in wanted:
            nets[fam] = self._mbv(layout, pick, resolution) if fam == "mbv" else self._resnet(layout, pick, resolution)
        self.nets = nn.ModuleDict(nets)
        self.family = family

    @staticmethod
    def _mbv(layout: dict[str, Any], pick: Callable[[str], Any], resolution: int) -> nn.Module:
        m = layout["mbv"]
        variants = block_variants()
        stem, widths, head = mbv_channels(layout, pick("mbv_width"))
        stage_modules, inp = [], stem
        for i, st in enumerate(m["stages"]):

            def block(j: int, i=i, st=st, inp=inp) -> nn.Module:
                cin, stride = (inp if j == 0 else widths[i]), (st["stride"] if j == 0 else 1)
                return LayerChoice(
                    {name: MBConv(cin, widths[i], stride, **variants[name]) for name in m["variants"]},
                    label=f"mbv_s{i}_b{j}",
                )

            stage_modules.append(Repeat(block, (st["depth"][0], st["depth"][1]), label=f"mbv_s{i}_depth"))
            inp = widths[i]
        stages = [{"width": w, "stride": st["stride"]} for w, st in zip(widths, m["stages"], strict=True)]
        return NasMobileNet(
            stages,
            num_classes=layout["num_classes"],
            in_channels=layout["in_channels"],
            stem=stem,
            stem_stride=m["stem_stride"],
            head=head,
            input_size=None if resolution == layout["side"] else resolution,
            stage_modules=stage_modules,
        )

    @staticmethod
    def _resnet(layout: dict[str, Any], pick: Callable[[str], Any], resolution: int) -> nn.Module:
        r = layout["resnet"]
        stage_modules, stages, inp = [], [], r["stem"]
        for i, st in enumerate(r["stages"]):
            width = pick(f"res_s{i}_width")

            def block(j: int, st=st, inp=inp, width=width) -> nn.Module:
                return ResBlock(inp if j == 0 else width, width, st["stride"] if j == 0 else 1)

            stage_modules.append(Repeat(block, (st["depth"][0], st["depth"][1]), label=f"res_s{i}_depth"))
            stages.append({"width": width, "stride": st["stride"]})
            inp = width
        return NasResNet(
            stages,
            num_classes=layout["num_classes"],
            in_channels=layout["in_channels"],
            stem=r["stem"],
            stem_stride=r["stem_stride"],
            stem_pool=r["stem_pool"],
            input_size=None if resolution == layout["side"] else resolution,
            stage_modules=stage_modules,
        )

    @property
    def net(self) -> nn.Module:
        return self.nets[self.family]

    def freeze(self, sample: dict[str, Any]) -> StudentSpace:
        with model_context(sample):
            return self.__class__(layout=self.layout)

    def forward(self, x):
        return self.net(x)


class ChoiceSpace(ModelSpace):
    """A space of plain choices (``{label: values}``), for a task that builds its candidates itself
    (the detector search, edgekd/tasks/detect/search.py): frozen on a sample, ``self.chosen`` is
    NNI's dict from label to value and the evaluator builds the network from it."""

    def __init__(self, table: dict[str, list[Any]]):
        super().__init__()
        self.table = table
        self.chosen = {label: ensure_frozen(self.add_mutable(nni.choice(label, list(v)))) for label, v in table.items()}

    def freeze(self, sample: dict[str, Any]) -> ChoiceSpace:
        with model_context(sample):
            return self.__class__(table=self.table)

    def forward(self, x):  # never called: the evaluator trains what it builds from ``chosen``
        return x


def new_space(layout: dict[str, Any]) -> StudentSpace:
    return StudentSpace(layout=layout)


def frozen_sample(space: StudentSpace, sample: dict[str, Any]) -> StudentSpace:
    """The network NNI builds for ``sample`` (used by tests to check it equals the zoo model)."""
    return space.freeze(sample)


def random_samples(layout: dict[str, Any], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` samples drawn by NNI from the space (seeded)."""
    import numpy as np

    space = new_space(layout)
    state = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        memo: dict[str, Any] = {}
        space.random(memo=memo, random_state=state)
        out.append(dict(memo))
    return out


def make_strategy(
    name: str,
    *,
    trials: int,
    seed: int,
    accept: Callable[[dict[str, Any]], bool],
    population: int | None = None,
    mutation_prob: float | None = None,
) -> Any:
    """An NNI strategy, chained with a ``Filter`` that rejects (before training) samples for which
    ``accept(sample)`` is false.

    Rejected samples get no metric: regularized evolution then keeps only trained candidates in
    its population (with a penalty metric, rejected ones fill the aging population and its
    children are rejected in turn until the Filter gives up), and TPE learns only from trained ones.
    """
    if name == "evolution":
        pop = population or max(4, min(20, trials // 2))
        main = nni_strategy.RegularizedEvolution(
            population_size=pop,
            sample_size=max(2, pop // 3),
            mutation_prob=mutation_prob if mutation_prob is not None else 0.15,
            seed=seed,
        )
    elif name == "random":
        main = nni_strategy.Random(seed=seed)
    elif name == "tpe":
        main = nni_strategy.TPE(optimize_mode="maximize", seed=seed)
    else:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return Chain(
        main, Filter(lambda model: accept(dict(model.sample)), metric_for_invalid=None, patience=REJECT_PATIENCE)
    )


def report(score: float) -> None:
    """Report a trial's final metric to NNI (inside an evaluator)."""
    nni.report_final_result(float(score))


def run_experiment(
    layout: dict[str, Any],
    evaluate: Callable[..., None],
    strategy: Any,
    *,
    trials: int,
    workdir: Path,
    engine: str = "sequential",
    concurrency: int = 1,
    port: int = 8745,
    evaluate_kwargs: dict[str, Any] | None = None,
    training_service: Any = None,
    on_warning: Callable[[str], None] | None = None,
    space: ModelSpace | None = None,
) -> None:
    """Run ``trials`` trainings of candidates chosen by ``strategy``; ``evaluate(model, **kwargs)``
    trains one frozen :class:`StudentSpace` and calls :func:`report`.

    ``engine="sequential"`` runs in this process; ``"nni-local"`` runs trial processes through
    NNI's local training service (``evaluate`` must then be importable at module level and its
    kwargs JSON-able), or ``training_service`` (an NNI training-service config) when given.
    ``space`` (e.g. a :class:`ChoiceSpace`) replaces the student space of ``layout``.
    """
    quiet_nni()
    space = space if space is not None else new_space(layout)
    evaluator = FunctionalEvaluator(evaluate, **(evaluate_kwargs or {}))
    exp = NasExperiment(space, evaluator, strategy)
    exp.config.max_trial_number = trials
    exp.config.experiment_working_directory = str(workdir)
    if engine == "sequential":
        exp.config.execution_engine = SequentialEngineConfig()
        if exp.run() is None:
            raise KeyboardInterrupt  # NNI stops the experiment on Ctrl-C and returns None
        exp.stop()
    else:
        from nni.experiment import launcher
        from nni.experiment.config import LocalConfig

        from edgekd.nas.manager import ManagerLauncher, stop_stale_manager

        exp.config.execution_engine = TrainingServiceEngineConfig()
        exp.config.trial_concurrency = concurrency
        exp.config.training_service = training_service or LocalConfig(use_active_gpu=False)
        stale = stop_stale_manager(workdir)
        if on_warning is not None:
            if stale:
                on_warning(stale)
            on_warning(
                f"starting NNI's manager (a web server on port {port}, listening on ALL network interfaces) for "
                f"{concurrency} parallel trials; stop it with Ctrl-C; use the default sequential engine to avoid it"
            )
        manager, popen = ManagerLauncher(workdir), launcher.Popen
        launcher.Popen = manager  # NNI's launcher starts the manager with it: the manager dies with this process
        try:
            if exp.run(port=port, wait_completion=True) is None:
                raise KeyboardInterrupt  # NNI stops the experiment on Ctrl-C and returns None
        except Exception as exc:  # noqa: BLE001 - NNI's manager failing to start is the user's setup to fix
            from edgekd.errors import EdgekdError

            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise EdgekdError(
                f"NNI's training service failed ({first}); see the logs under {workdir}, or use the default "
                "sequential engine (--engine sequential)"
            ) from None
        finally:  # also on Ctrl-C and errors: the manager and its trials stop before edgekd goes on
            launcher.Popen = popen
            with contextlib.suppress(Exception):  # NNI stopped it already after a Ctrl-C
                exp.stop()
            manager.forget()
