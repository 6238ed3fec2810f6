"""Keeping freed memory in glibc's malloc, for large models on CPU.

On Linux, glibc's `malloc` gives every block above its mmap threshold (at
most 32 MiB by default) its own fresh `mmap` and returns it to the system
on `free`. A forward pass of the full-size model makes hundreds of such
temporaries (a 5,184 x 4,736 float32 activation is 98 MB), and each is
faulted in page by page, zero-filled by the kernel, on every call. On the
2-core CPU of docs/benchmarks.md, on PyTorch at 1008 px, keeping them
made the image encoder about a fifth faster and a batch of four prompts
about a third faster (JAX and TensorFlow keep their own buffers and gained
nothing).

`tune_cpu_allocator()` tells glibc, for the rest of the process, to serve
such blocks from its heap and to keep what is freed for the next call: the
same blocks are then reused, already resident. It changes the whole
process's allocator, not only keras_sam3's arrays, so it is opt-in (the
command line, `python -m keras_sam3`, applies it unless told not to). The
cost is memory the process keeps after a call: up to `keep_bytes` of freed
heap stays resident instead of going back to the system.
"""

import ctypes
import ctypes.util
import sys

# mallopt parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

_INT_MAX = 2**31 - 1


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt
    except (OSError, AttributeError):
        return None  # not glibc (musl, for one, has no mallopt)
    return libc


def tune_cpu_allocator(keep_bytes=_INT_MAX, top_pad_bytes=2**30):
    """Makes glibc's malloc reuse large freed blocks instead of unmapping them.

    Sets `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD` to `keep_bytes` (blocks
    up to that size come from the heap, and freed memory up to that amount
    is kept) and `M_TOP_PAD` to `top_pad_bytes` (how far the heap grows at
    once; pages not yet touched cost no memory). Call it once, before the
    heavy work; it applies to allocations made after it.

    Args:
        keep_bytes: int, the mmap and trim thresholds, at most `2**31 - 1`
            (mallopt takes a C `int`).
        top_pad_bytes: int, the heap's growth step, at most `2**31 - 1`.

    Returns:
        `True` when glibc accepted the settings, `False` where the process
        does not run on glibc (macOS, Windows, musl): nothing is changed.

    Example:

    ```python
    import keras_sam3

    keras_sam3.tune_cpu_allocator()
    segmenter = keras_sam3.SAM3PromptableConceptImageSegmenter.from_preset("sam3")
    ```
    """
    for name, value in (("keep_bytes", keep_bytes), ("top_pad_bytes", top_pad_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT_MAX:
            raise ValueError(f"`{name}` must be an int in [0, 2**31 - 1] (mallopt takes a C int); received {value!r}")
    libc = _glibc()
    if libc is None:
        return False
    settings = ((M_MMAP_THRESHOLD, keep_bytes), (M_TRIM_THRESHOLD, keep_bytes), (M_TOP_PAD, top_pad_bytes))
    accepted = [libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1 for param, value in settings]
    if not all(accepted):
        raise RuntimeError(f"glibc's mallopt refused {[s for s, ok in zip(settings, accepted) if not ok]}")
    return True
