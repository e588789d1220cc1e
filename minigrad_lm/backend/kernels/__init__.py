"""The backends' fast paths of the hot ops: cpu.py (NumPy, on all cores) and cuda.py (fused
CuPy kernels), with the same function names and signatures, each beside the few `xp` lines of
its Function that state the math (the reference, also what runs where no kernel applies)."""
from __future__ import annotations

import numpy as np

from . import cpu, cuda


def module_with(name: str, *arrays):
    """The kernel module (cpu or cuda) that has `name` and runs on these arrays, else None."""
    module = cpu if isinstance(arrays[0], np.ndarray) else cuda
    return module if hasattr(module, name) and module.supports(name, *arrays) else None
