"""Target profiles: what each edge target (Jetson module, data-centre GPU, CPU) can do.

Profiles are data files (``profiles/<name>.yaml``) validated by :class:`TargetProfile`;
:func:`load_target` finds one by name or reads a user's own YAML file.
"""

from edgekd.targets.profile import LATENCY_MODEL_FIELDS, NUMERIC_FIELDS, TargetProfile
from edgekd.targets.registry import is_family, list_targets, load_target, resolve_target, target_names

__all__ = [
    "LATENCY_MODEL_FIELDS",
    "NUMERIC_FIELDS",
    "TargetProfile",
    "is_family",
    "list_targets",
    "load_target",
    "resolve_target",
    "target_names",
]
