"""Speculative and parallel decoding methods; all verify through `executors.methods.spec.engine`."""
