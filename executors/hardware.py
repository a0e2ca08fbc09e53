"""Hardware fingerprint of the node running the executor, plus a short cached probe.

The torch thread count is part of the hardware class: the same 2-core box measured with one
thread behaves like a smaller (edge) device, and the advisor must not mix the two.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import socket
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)  # no import: triton is ~1 GB and slow to load
    except importlib.metadata.PackageNotFoundError:
        return None


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm)\)|cpu|processor|@.*|\d+-core", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:40] or "unknown"


def static_fingerprint(device: str = "cpu") -> dict:
    """What the machine is, without timing anything."""
    info = {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "ram_gb": _ram_gb(),
        "device_kind": "cuda" if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "triton": _version("triton"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu_name": None,
        "gpu_count": 0,
    }
    if info["device_kind"] == "cuda":
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(
            gpu_name=props.name,
            gpu_count=torch.cuda.device_count(),
            gpu_sms=props.multi_processor_count,
            gpu_mem_gb=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}",
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return info


def hardware_class(info: dict) -> str:
    if info["device_kind"] == "cuda":
        return f"cuda-{_slug(info['gpu_name'])}-x{info['gpu_count']}"
    return f"cpu-{_slug(info['cpu_model'])}-t{info['threads']}"


def node_id(info: dict) -> str:
    host = hashlib.sha256(f"{socket.gethostname()}|{info['cpu_model']}|{info.get('gpu_name')}".encode())
    return f"{hardware_class(info)}-{host.hexdigest()[:8]}"


def _timed(fn, device: torch.device, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def probe(device: str = "cpu") -> dict:
    """Memory bandwidth (a large copy: read + write) and fp32/bf16 matmul rate; ~1–2 s on CPU."""
    dev = torch.device(device)
    big = 256 if dev.type == "cuda" else 64  # MiB per copy buffer: larger than any CPU cache
    src = torch.ones(big * 2**20 // 4, device=dev)
    dst = torch.empty_like(src)
    copy_s = _timed(lambda: dst.copy_(src), dev)
    result = {"mem_bw_gbs": round(2 * src.numel() * 4 / copy_s / 1e9, 2)}
    for dtype, n in (
        (torch.float32, 1024 if dev.type == "cpu" else 4096),
        (torch.bfloat16, 512 if dev.type == "cpu" else 4096),
    ):  # bf16 is ~7x slower on AVX2
        a = torch.randn(n, n, device=dev).to(dtype)
        seconds = _timed(functools.partial(torch.matmul, a, a), dev)
        result[f"{'fp32' if dtype == torch.float32 else 'bf16'}_gflops"] = round(2 * n**3 / seconds / 1e9, 1)
    return result


def fingerprint(device: str = "cpu", cache_dir: Path | None = None) -> dict:
    """Static facts plus the probe, cached per node id (the probe is rerun only for a new class)."""
    info = static_fingerprint(device)
    info["hardware_class"] = hardware_class(info)
    info["node_id"] = node_id(info)
    cache_file = (cache_dir / "hardware" / f"{info['node_id']}.json") if cache_dir else None
    if cache_file is not None and cache_file.exists():
        cached = json.loads(cache_file.read_text())
        if cached.get("torch") == info["torch"]:
            return cached
    info["probe"] = probe(device)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(info, indent=2))
    log.info("hardware %s: %s", info["hardware_class"], info["probe"])
    return info


def node_row(info: dict) -> dict:
    """The Node object that travels inside every profile record."""
    return {
        "id": info["node_id"],
        "name": socket.gethostname(),
        "hardware_class": info["hardware_class"],
        "device_kind": info["device_kind"],
        "cpu_model": info["cpu_model"],
        "cores": info["cores"],
        "threads": info["threads"],
        "ram_gb": info["ram_gb"],
        "gpu_name": info.get("gpu_name"),
        "gpu_count": info.get("gpu_count", 0),
        "gpu_mem_gb": info.get("gpu_mem_gb"),
        "mem_bw_gbs": info["probe"]["mem_bw_gbs"],
        "fp32_gflops": info["probe"]["fp32_gflops"],
        "bf16_gflops": info["probe"]["bf16_gflops"],
        "fingerprint": info,
    }
