"""Executors: the method registry, model zoo, workloads, profiler harness and hardware fingerprint."""
