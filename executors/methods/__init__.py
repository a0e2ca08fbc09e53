"""Importing this package registers every method (an explicit list: the registry is an allow-list)."""

from executors.methods import baseline  # noqa: F401
