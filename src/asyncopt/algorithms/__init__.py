"""Suggest functions: pure, vectorized, reading a `CompiledSpace` and a `History`."""
