"""Layers and modules with PyTorch's habits (`minigrad_lm.nn`)."""
from . import functional
from .attention import AttentionRecorder, KVCache, MultiHeadAttention
from .layers import GELU, Dropout, Embedding, FeedForward, LayerNorm, Linear, ReLU
from .lora import LoRALinear, add_lora, merge_lora, remove_lora
from .module import Module, ModuleList, Parameter, Sequential
from .transformer import (
    LearnedPositionalEncoding,
    SinusoidalPositionalEncoding,
    TransformerLayer,
)
