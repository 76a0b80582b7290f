"""leanrank: make e-commerce search and recommendation Transformers small and fast.

Importing the package is cheap: heavy dependencies (torch, transformers, bm25s, faiss) load
only when the module that needs them is imported.
"""

__version__ = "0.1.0"

import logging as _logging

# torchao (int8-inductor) is imported by transformers whenever it is installed; on a CPU-only torch
# it logs that its CUDA kernels cannot load, and torch logs deprecations of its Enum registrations,
# on every model load. Neither is actionable by a leanrank user.
_logging.getLogger("torch.utils._pytree").setLevel(_logging.ERROR)
_logging.getLogger("torchao").setLevel(_logging.ERROR)
