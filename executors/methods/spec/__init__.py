"""Speculative and parallel decoding methods; all verify through `executors.speculative`."""
