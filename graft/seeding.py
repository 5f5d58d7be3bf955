"""Every random draw derives from (seed, stage, purpose): a resumed run draws what an uninterrupted one would."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *parts: object) -> int:
    digest = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, *parts: object):
    import torch

    return torch.Generator().manual_seed(derive_seed(seed, *parts))
