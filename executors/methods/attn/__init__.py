"""Attention methods: sparse attention over the KV cache."""
