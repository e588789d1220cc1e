"""Benchmarks (python -m benchmarks.<name>). Importing them changes nothing process-wide: they
measure the package as a user's own script gets it, unless a benchmark says otherwise."""
