"""Pipeline stages, one file each; importing this package registers them with the runner."""

from edgekd.stages import (  # noqa: F401
    bench,
    distill,
    export,
    quantize,  # noqa: F401  (issue 5: INT8)
    teacher,
)
