"""Models: GPT language model, sequence classifier, encoder-decoder Transformer."""
from .classifier import SequenceClassifier
from .gpt import GPT, GPTConfig
from .seq2seq import Seq2SeqConfig, Seq2SeqTransformer
