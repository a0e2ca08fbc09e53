"""Structured sparsity methods."""
