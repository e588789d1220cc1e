"""Using trained models: sampling text from a GPT with a key/value cache (sampling.py) and
greedy or beam-search decoding of an encoder-decoder (decoding.py)."""
