"""Triton kernels for low-bit matmul and sparse attention, each beside its PyTorch reference.

Executors call :mod:`accel_kernels.dispatch`; the kernel modules build their Triton functions on first
use, so importing this package needs neither triton nor CUDA.
"""
