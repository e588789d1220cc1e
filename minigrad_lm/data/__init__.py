"""Data: the default corpus, tokenizers (character, byte, and word or BPE vocabularies
learned with the ``tokenizers`` library), text files and token folders for language models,
and labelled sentences for classification."""
