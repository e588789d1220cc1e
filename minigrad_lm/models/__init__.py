"""Models: GPT language model and sequence classifier."""
from .gpt import GPT, GPTConfig, SequenceClassifier
from .seq2seq import Seq2SeqConfig, Seq2SeqTransformer
