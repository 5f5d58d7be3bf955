"""The allocator setting that keeps a CPU training step from faulting its memory back in every step."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each probe is a fresh interpreter

REPO = Path(__file__).resolve().parents[2]

# A fresh interpreter, so that no earlier test has set the thresholds already. It allocates one
# step-sized block (20 MB, like a batch's activations), frees it, and reports where it went.
PROBE = textwrap.dedent("""
    import ctypes, sys
    import torch
    from graft.training.memory import keep_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "keep":
        assert keep_freed_memory()
    block = torch.ones(5 << 20)  # 20 MB of float32
    mapped_while_held = libc.mallinfo2().hblkhd
    del block
    print(mapped_while_held >> 20, libc.mallinfo2().fordblks >> 20)
""")


def probe(mode: str) -> tuple[int, int]:
    """(MB in separate mappings while the block is held, MB free but kept in the heap after it is freed)."""
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO, check=True, capture_output=True, text=True).stdout
    mapped, kept = out.split()
    return int(mapped), int(kept)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_a_freed_step_sized_block_stays_in_the_process():
    mapped, kept = probe("keep")
    assert mapped < 20, "the block got its own mapping, which free() hands straight back to the kernel"
    assert kept >= 20, "the freed block was returned to the kernel; the next step would fault it back in"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_glibc_defaults_hand_the_block_back():
    """What the setting is for: by default the same block is mapped apart and gone once freed."""
    mapped, kept = probe("default")
    assert mapped >= 20 and kept < 20
