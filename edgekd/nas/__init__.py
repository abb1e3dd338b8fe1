"""The student search (issue 4): NNI model spaces, teacher-guided proxy, latency-bounded strategies.

- ``space``: the search space as data and sample -> zoo arch spec (no NNI);
- ``nni_space``: the only module that imports NNI (model space, strategies, experiment);
- ``cost``: parameters, FLOPs and modelled target latency of a candidate;
- ``proxy``: the short KD training from the teacher that scores a candidate;
- ``journal``: ``search/trials.jsonl``, which a cut-off search resumes from;
- ``pareto``: ``search/pareto.png``;
- ``search``: the search itself (budget, candidates, outputs).

The stage that runs it is ``edgekd/stages/search.py``. Importing this package imports nothing.
"""
