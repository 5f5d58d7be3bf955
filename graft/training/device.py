"""Where a training step runs and how batches get there.

On the CPU: float32, and channels_last for convolutional models (oneDNN's convolutions are faster in
that layout; BENCHMARKS.md has the figures). On CUDA, in addition: bf16 autocast around the forward
pass and the loss, batches pinned on the host and copied without blocking. Nothing here reads a value
back to the host: the loop does that once per epoch. Autocast and pinning apply to CUDA only, so the
CUDA path changes no CPU result.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is available; set train.device: auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@dataclass(frozen=True)
class Placement:
    """A device plus the memory layout its model and batches use."""

    device: torch.device
    memory_format: torch.memory_format = torch.contiguous_format

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def place(self, model: nn.Module) -> nn.Module:
        return model.to(self.device, memory_format=self.memory_format)

    def batch(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host batch (uint8 images or int64 labels) on the device; images in the model's layout."""
        if self.cuda:
            tensor = tensor.pin_memory()  # so that the copy below does not block the host
        tensor = tensor.to(self.device, non_blocking=True)
        if tensor.ndim == 4:
            tensor = tensor.contiguous(memory_format=self.memory_format)
        return tensor

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.cuda:
            # bf16 keeps float32's range, so no loss scaling is needed.
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def placement_for(model: nn.Module, device: torch.device) -> Placement:
    convolutional = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return Placement(device, torch.channels_last if convolutional else torch.contiguous_format)


def release_layout(model: nn.Module) -> nn.Module:
    """Back to the default layout: safetensors writes only contiguous tensors, and a saved model
    should not depend on how it was trained."""
    return model.to(memory_format=torch.contiguous_format)
