"""The model zoo over every family: build into the cache, list, and load a source into a bundle.

Sources: `zoo:<name>` for an entry a family registers (built on first use: trained or
converted deterministically, cached as safetensors with a manifest under
`<cache_dir>/zoo/<name>/`; an entry without a build step ships inside a pip package), and
`local:/path` for a user's own folder, which the first family whose loader recognises it loads
(weights from safetensors only, never remote code).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from executors.families import families, zoo_entries, zoo_entry
from executors.registry import ModelBundle

log = logging.getLogger(__name__)


def zoo_dir(root: Path | None = None) -> Path:
    if root is None:
        from profiles.settings import get_settings

        root = get_settings().cache_dir
    return Path(root) / "zoo"


def zoo_names() -> list[str]:
    return [entry.name for entry in zoo_entries()]


def build(name: str, root: Path | None = None, force: bool = False) -> dict:
    """Trains (or converts) one zoo model into the cache; returns its manifest."""
    entry = zoo_entry(name)
    folder = zoo_dir(root) / name
    manifest_path = folder / "manifest.json"
    if entry.build is None:
        return {"name": name, "source": entry.source, "params": entry.params, "note": entry.note, "prebuilt": True}
    if manifest_path.exists() and not force:
        return json.loads(manifest_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"family": entry.family, **entry.build(folder, root)}
    manifest_path.write_text(json.dumps(manifest, indent=2))
    log.info("built %s: %s params", name, f"{manifest['params']:,}")
    return manifest


def list_zoo(root: Path | None = None) -> list[dict]:
    rows = []
    for entry in zoo_entries():
        manifest_path = zoo_dir(root) / entry.name / "manifest.json"
        built = entry.build is None or manifest_path.exists()
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        rows.append(
            {
                "name": entry.name,
                "family": entry.family,
                "built": built,
                "params": manifest.get("params") or entry.params,
                "heldout_loss": manifest.get("heldout_loss"),
                "note": entry.note,
                "path": str(manifest_path.parent),
            }
        )
    return rows


def load_bundle(source: str, root: Path | None = None, build_missing: bool = True) -> ModelBundle:
    """`zoo:<name>` (built on first use unless build_missing is False) or `local:/path`."""
    scheme, _, ref = source.partition(":")
    if scheme == "zoo":
        entry = zoo_entry(ref)
        folder = zoo_dir(root) / ref
        if entry.build is not None and not (folder / "manifest.json").exists():
            if not build_missing:
                raise FileNotFoundError(f"{source} is not built; run `accel-advisor zoo build {ref}`")
            build(ref, root)
        return entry.load(folder, source)
    if scheme == "local":
        folder = Path(ref).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"{source}: no such folder")
        for family in families():
            bundle = family.local_loader(folder, source) if family.local_loader else None
            if bundle is not None:
                return bundle
        loaders = [f.name for f in families() if f.local_loader]
        raise ValueError(
            f"{source}: no family recognises this folder (families with local loaders: {', '.join(loaders)})"
        )
    raise ValueError(f"model source must be zoo:<name> or local:/path, not {source!r}")
