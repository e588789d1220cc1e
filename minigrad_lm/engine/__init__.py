"""The autograd engine: Tensor, Function and backward (tensor.py), the differentiable ops
written once against ``xp`` (ops/, by family), tensor creation, random streams, gradient
checking and recomputation. Everything here runs on NumPy or CuPy through
``minigrad_lm.backend``."""
from . import ops, tensor_methods  # noqa: F401  (binds Tensor's operators and methods)
