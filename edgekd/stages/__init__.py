"""Pipeline stages, one file each; importing this package registers them with the runner."""

from edgekd.stages import bench, distill, export, package, quantize, search, teacher  # noqa: F401
