"""Models: GPT language model and sequence classifier."""
from .classifier import SequenceClassifier
from .gpt import GPT, GPTConfig
