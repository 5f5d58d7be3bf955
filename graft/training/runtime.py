"""Torch's process-wide settings for a stage: threads, determinism, the allocator, the device."""

from __future__ import annotations

import os

import torch

from graft.config import Params
from graft.training import distributed
from graft.training.device import resolve_device
from graft.training.memory import keep_freed_memory


def setup_torch(params: Params) -> torch.device:
    """Threads, determinism, the allocator and the device; under torchrun, also joins the process group."""
    keep_freed_memory()  # without it, a CPU step can spend a third of its time faulting pages in (memory.py)
    threads = distributed.threads_per_process(params.train.threads)
    if threads:
        torch.set_num_threads(threads)
    # Bit-identical reruns on the same machine and build, which `graft reproduce` and resumed runs rely on
    # (README; tests/e2e/test_registry.py, tests/faults/test_resume.py); cuBLAS needs a fixed
    # workspace for that, and must be told before its first call.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    deterministic_algorithms()
    # That mode also fills every new tensor with NaN, to expose reads of uninitialised memory: a fifth of
    # a training step's CPU time (BENCHMARKS.md), and no result depends on it.
    torch.utils.deterministic.fill_uninitialized_memory = False
    return distributed.join(resolve_device(params.train.device))


def deterministic_algorithms() -> None:
    """torch.use_deterministic_algorithms(True, warn_only=True) without its import of torch._inductor.config,
    which pulls in torch._dynamo: 1.8 to 2 s of every stage process that trains, for a setting of the
    compiler that graft never runs. If the compiler is loaded already, the public call sets both."""
    import sys

    switch = getattr(torch._C, "_set_deterministic_algorithms", None)
    if switch is None or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        switch(True, warn_only=True)
