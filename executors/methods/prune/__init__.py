"""Pruning methods: structured (Adapt-Pruner) and magnitude pruning with light retraining (PERP)."""
