"""Dataset generation: many CTs x poses x randomised physics -> a labelled, sharded 2D dataset.

``generate(config, out)`` (runner) is the one generator behind ``deepdrr-slicer generate``, the
Slicer module's *Generate dataset* section and the benchmarks. The format is described in
``shards`` and in the dataset card each run writes; ``torch_data`` reads it (and renders on the fly).
"""

from .config import CTEntry, GenerateConfig
from .runner import GenerateReport, generate

__all__ = ["CTEntry", "GenerateConfig", "GenerateReport", "generate"]
