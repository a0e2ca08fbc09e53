"""Serving methods: scheduling options of the engine in executors/serving.py."""
