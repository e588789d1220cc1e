"""Files, safely: validated JSON from untrusted sources (untrusted.py) and crash-safe writes,
checksums and safetensors (files.py). Imports nothing else of the package, so every layer
may use it."""
