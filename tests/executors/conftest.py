"""The tiny zoo LM, trained once per test session (a few seconds) into a temporary cache."""

from __future__ import annotations

import pytest

import executors.methods  # noqa: F401  (registers every method)
from executors.zoo import build, load_bundle


@pytest.fixture(scope="session")
def zoo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo-cache")
    build("lm-tiny", root)
    return root


@pytest.fixture(scope="session")
def tiny(zoo_root):
    return load_bundle("zoo:lm-tiny", zoo_root, build_missing=False)
