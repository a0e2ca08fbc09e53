"""Fingerprint: thread count is part of the hardware class; the probe is cached per node."""

from __future__ import annotations

import torch

from executors.hardware import fingerprint, node_row


def test_thread_counts_are_different_hardware_classes(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fingerprint("cpu", tmp_path)
        torch.set_num_threads(2)
        two = fingerprint("cpu", tmp_path)
    finally:
        torch.set_num_threads(before)
    assert one["hardware_class"].endswith("-t1") and two["hardware_class"].endswith("-t2")
    assert one["node_id"] != two["node_id"]
    assert {p.name for p in (tmp_path / "hardware").iterdir()} == {f"{one['node_id']}.json", f"{two['node_id']}.json"}


def test_probe_measures_and_is_reused(tmp_path):
    first = fingerprint("cpu", tmp_path)
    probe = first["probe"]
    assert probe["mem_bw_gbs"] > 0 and probe["fp32_gflops"] > 0 and probe["bf16_gflops"] > 0
    assert fingerprint("cpu", tmp_path)["probe"] == probe
    row = node_row(first)
    assert row["threads"] == torch.get_num_threads() and row["cores"] >= 1
    assert row["fp32_gflops"] == probe["fp32_gflops"] and row["fingerprint"]["torch"] == torch.__version__
