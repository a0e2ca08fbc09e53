"""One version everywhere: pyproject, the installed package metadata, the CLI, /healthz, the changelog."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from api.cli import app

ROOT = Path(__file__).resolve().parents[2]


def source_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_installed_metadata_is_this_source_tree():
    # A stale install (version bumped without reinstalling) or none at all would report another version.
    assert importlib.metadata.version("accel-advisor") == source_version()


def test_version_command_prints_the_package_metadata_version():
    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == importlib.metadata.version("accel-advisor")


def test_healthz_reports_the_package_metadata_version(client):
    body = client.get("/healthz").json()
    assert body["version"] == importlib.metadata.version("accel-advisor")
    assert client.get("/openapi.json").json()["info"]["version"] == body["version"]


def test_changelog_has_the_release_and_an_unreleased_section():
    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), flags=re.MULTILINE)
    assert headings[0] == "Unreleased"
    assert source_version() in headings[1:]
