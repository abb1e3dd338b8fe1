"""Pipeline stages, one file each; importing this package registers them with the runner."""

from edgekd.stages import bench, distill, export, teacher  # noqa: F401
from edgekd.stages import package  # noqa: F401  (issue 6)
