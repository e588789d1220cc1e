"""Differentiable primitives, each written once against `xp` (NumPy or CuPy), by family.

A Function's docstring states its math; backward returns one gradient per positional argument and
never writes into the upstream gradient `gy` (it may be a read-only broadcast view). The fused
ones state it in a few `xp` lines (the reference) and call the CPU or CUDA kernel of the same name
(backend/kernels/) where one applies.
"""
from .activation import (  # noqa: F401
    Gelu,
    LogSoftmax,
    Relu,
    Sigmoid,
    Softmax,
    Tanh,
    gelu,
    log_softmax,
    relu,
    sigmoid,
    softmax,
    tanh,
)
from .common import (  # noqa: F401
    _broadcastable,
    normalize_axis,
)
from .compare import (  # noqa: F401
    equal,
    greater,
    greater_equal,
    less,
    less_equal,
    logical_not,
    not_equal,
)
from .elementwise import (  # noqa: F401
    Abs,
    Add,
    Clip,
    Div,
    Exp,
    Log,
    MaskedFill,
    Maximum,
    Minimum,
    Mul,
    Neg,
    Pow,
    PowScalar,
    Sqrt,
    Sub,
    Where,
    _mask_array,
    abs,
    add,
    clip,
    div,
    exp,
    log,
    masked_fill,
    maximum,
    minimum,
    mul,
    neg,
    pow,
    sqrt,
    sub,
    where,
)
from .linalg import (  # noqa: F401
    MatMul,
    matmul,
)
from .reduction import (  # noqa: F401
    LogSumExp,
    MaxMin,
    Mean,
    Sum,
    argmax,
    argmin,
    logsumexp,
    max,
    mean,
    min,
    std,
    sum,
    var,
)
from .shape import (  # noqa: F401
    AsType,
    BroadcastTo,
    Concatenate,
    GetItem,
    Reshape,
    Stack,
    ToDevice,
    Transpose,
    astype,
    broadcast_to,
    concatenate,
    expand,
    getitem,
    reshape,
    split,
    squeeze,
    stack,
    swapaxes,
    transpose,
    unsqueeze,
)
