"""Models: GPT language model and sequence classifier."""
from .gpt import GPT, GPTConfig, SequenceClassifier
