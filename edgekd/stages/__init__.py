"""The pipeline's stages, one file each, listed here in pipeline order: the one place the runner
(``edgekd/pipeline.py``) and the CLI read them from. Adding a stage is adding its file and its entry.
"""

from edgekd.stages.bench import BenchStage
from edgekd.stages.distill import DistillStage
from edgekd.stages.export import ExportStage
from edgekd.stages.package import PackageStage
from edgekd.stages.quantize import QuantizeStage
from edgekd.stages.search import SearchStage
from edgekd.stages.teacher import TeacherStage

STAGES = (TeacherStage, SearchStage, DistillStage, QuantizeStage, ExportStage, BenchStage, PackageStage)

__all__ = ["STAGES"]
