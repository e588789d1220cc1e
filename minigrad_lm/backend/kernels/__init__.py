"""Backend-specific fast paths (cuda.py: fused CuPy kernels), each beside its xp reference."""
