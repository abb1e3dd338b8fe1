"""edgekd: shrink a trained PyTorch classifier onto an edge device.

Teacher -> (search) -> distill -> (quantize) -> export -> bench -> (package), each stage a unit
of work over one run directory (see ``edgekd.pipeline``).
"""

__version__ = "0.1.0"
