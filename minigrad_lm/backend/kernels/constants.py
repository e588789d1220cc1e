"""Constants of the math that the kernels and their `xp` references share."""
from __future__ import annotations

import math

# GELU's tanh approximation: gelu(x) ~ x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_C = 0.044715
