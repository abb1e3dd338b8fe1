"""Classification, the first task: the zoo's classifiers, cross-entropy, top-1, logits out.

Its stages are the defaults of ``edgekd/stages/`` (the pipeline was built for it first), so it
overrides none. Its data: scikit-learn's ``digits``, folders of ``.npz`` files, ImageFolder trees
(edgekd/data/); its models: edgekd/models/; its KD methods: edgekd/distill/methods/.
"""

from __future__ import annotations

from edgekd.tasks.base import Metric, Task

CLASSIFY = Task(
    name="classify",
    description="image classification (top-1)",
    metric=Metric(key="top1", label="top-1"),
    models_from="edgekd.models.registry:list_models",
    kd_methods_from="edgekd.distill.methods:method_names",
    matches_data=lambda source: False,  # the default: anything detection does not claim
    matches_teacher_arch=lambda arch: False,
)
