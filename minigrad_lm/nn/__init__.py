"""Layers and modules with PyTorch's habits (`minigrad_lm.nn`)."""
from . import functional
from .attention import KVCache, MultiHeadAttention
from .layers import GELU, Dropout, Embedding, FeedForward, LayerNorm, Linear, ReLU
from .module import Module, ModuleList, Parameter, Sequential
from .transformer import (LearnedPositionalEncoding, SinusoidalPositionalEncoding,
                          TransformerLayer)
