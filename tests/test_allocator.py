import os
import subprocess
import sys

import pytest

from keras_sam3 import allocator

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# Runs in a fresh process, so that the test process's allocator stays as
# it was: a 64 MiB block is mmapped by default; after tune_cpu_allocator()
# it comes from the heap and stays there, free, after `free`.
_PROBE = r"""
import ctypes, importlib.util, sys
spec = importlib.util.spec_from_file_location("allocator", sys.argv[1])
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20

def mmapped_while_held():
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    held = libc.mallinfo2().hblkhd - before
    libc.free(block)
    return held

default = mmapped_while_held()
applied = allocator.tune_cpu_allocator()
tuned = mmapped_while_held()
kept = libc.mallinfo2().fordblks
print(default, applied, tuned, kept)
"""


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc only: elsewhere tune_cpu_allocator returns False")
def test_large_blocks_come_from_the_heap_and_are_kept():
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, os.path.join(ROOT, "keras_sam3", "allocator.py")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    default, applied, tuned, kept = result.stdout.split()
    size = 64 << 20
    assert int(default) >= size  # glibc's default: a block of its own
    assert applied == "True"
    assert int(tuned) == 0  # from the heap
    assert int(kept) >= size  # freed, kept for the next call


def test_not_glibc_changes_nothing(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator._glibc() is None
    assert allocator.tune_cpu_allocator() is False


@pytest.mark.parametrize("value", [-1, 2**31, 1.5, True, "1"])
def test_bad_thresholds_are_refused(value):
    with pytest.raises(ValueError, match="keep_bytes"):
        allocator.tune_cpu_allocator(keep_bytes=value)
    with pytest.raises(ValueError, match="top_pad_bytes"):
        allocator.tune_cpu_allocator(top_pad_bytes=value)
