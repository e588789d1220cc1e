"""Models: GPT language model, sequence classifier, encoder-decoder Transformer."""
from .classifier import SequenceClassifier
from .config import GPTConfig
from .gpt import GPT
from .seq2seq import Seq2SeqConfig, Seq2SeqTransformer
