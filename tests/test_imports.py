"""Importing any package (and every module in it) must not initialise CUDA or load a model."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import importlib, pkgutil, sys
    import torch, safetensors.torch

    def forbidden(what):
        def refuse(*args, **kwargs):
            raise AssertionError(f"{what} called at import time")
        return refuse

    torch.cuda.init = forbidden("torch.cuda.init")
    torch.cuda._lazy_init = forbidden("torch.cuda._lazy_init")
    torch.load = forbidden("torch.load")
    safetensors.torch.load_file = forbidden("safetensors.torch.load_file")
    safetensors.torch.load = forbidden("safetensors.torch.load")
    safetensors.safe_open = forbidden("safetensors.safe_open")

    imported = []
    for name in ("profiles", "executors", "accel_kernels", "advisor", "api"):
        package = importlib.import_module(name)
        imported.append(name)
        for info in pkgutil.walk_packages(package.__path__, prefix=name + "."):
            if ".migrations" in info.name:
                continue  # Alembic scripts run only inside an Alembic context
            importlib.import_module(info.name)
            imported.append(info.name)
    assert not torch.cuda.is_initialized()
    assert "transformers" not in sys.modules, "transformers imported at import time"
    print(len(imported))
""")


def test_importing_every_module_initialises_no_cuda_and_loads_no_model():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.strip().splitlines()[-1]) >= 10  # it really walked the packages


def test_no_installed_distribution_shares_a_top_level_name_with_ours():
    """A package name another distribution also installs shadows it or is shadowed: transformers 5
    depends on Hugging Face's ``kernels``, which a package of ours named ``kernels`` once hid."""
    import importlib.metadata

    owners = importlib.metadata.packages_distributions()
    ours = ("profiles", "executors", "accel_kernels", "advisor", "api")
    shared = {name: sorted(set(owners.get(name, [])) - {"accel-advisor"}) for name in ours}
    assert not any(shared.values()), shared
