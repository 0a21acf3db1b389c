"""A training run's resident memory: the frozen weights held once, in the dtype they are used in, and the parts
of the model and the allocator's free pages that training does not need handed back.

diffusers and transformers load safetensors files through a memory map, so a loaded weight is a view of its
file. Every page of it that is read counts in the process's resident memory, and stays counted for as long as
any tensor of that file is alive. Two things then hold a weight twice: a cast (``torch_dtype=bf16`` reads the
whole fp32 file, then keeps the bf16 copy: 1.5x the fp32 size at the peak of a load) and a copy that training
makes (the channels-last layout of every convolution). ``own_weights`` copies (and casts) one tensor at a time
into the process's own memory and tells the kernel that the file pages it read are no longer needed, so the
peak is the weights in their training dtype plus one tensor (benchmarks/memory_profile.py, docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

WEIGHT_FILES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")  # what a loader maps
_MADV_DONTNEED = 4  # Linux's value


def _libc() -> Any | None:
    """glibc's functions, or None elsewhere (macOS, musl without them, Windows)."""
    if not os.path.exists("/proc/self/maps"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.madvise  # noqa: B018  (present, or AttributeError)
    except (OSError, AttributeError):
        return None
    return libc


def mapped_weight_ranges() -> list[tuple[int, int]]:
    """The address ranges where this process maps weight files."""
    ranges = []
    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip().endswith(WEIGHT_FILES):
                start, end = fields[0].split("-")
                ranges.append((int(start, 16), int(end, 16)))
    return ranges


def own_weights(
    modules: tuple[Any, ...], dtype: torch.dtype | None = None, *, channels_last: tuple[Any, ...] = ()
) -> None:
    """Every parameter and buffer of ``modules`` in memory of this process's own, the floating ones cast to
    ``dtype`` (None: kept), the convolution weights of the modules in ``channels_last`` in that layout (what
    ``speed.to_channels_last`` would copy them into later). A tensor that maps a weight file is copied and the
    file pages it covered are dropped from the process at once; one already in the process's memory is copied
    only where its dtype or layout changes. Parameters keep their identity (``.data`` is swapped), so tied
    weights stay tied."""
    import torch

    libc = _libc()
    ranges = mapped_weight_ranges() if libc is not None else []
    page = os.sysconf("SC_PAGE_SIZE") if libc is not None else 1

    def owned(tensor: torch.Tensor, nhwc: bool) -> torch.Tensor:
        start = tensor.data_ptr()
        mapped = any(low <= start < high for low, high in ranges)
        cast = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        layout = torch.channels_last if nhwc and tensor.dim() == 4 else torch.preserve_format
        relayout = layout == torch.channels_last and not tensor.is_contiguous(memory_format=layout)
        if not mapped and cast == tensor.dtype and not relayout:
            return tensor
        new = tensor.to(dtype=cast, memory_format=layout, copy=True)
        if mapped and libc is not None:
            # Only whole pages inside this tensor: a page it shares with a neighbour stays.
            first = -(-start // page) * page
            last = (start + tensor.numel() * tensor.element_size()) // page * page
            if last > first:
                libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)
        return new

    with torch.no_grad():
        for module in modules:
            nhwc = any(module is other for other in channels_last)
            for tensor in (*module.parameters(), *module.buffers()):
                tensor.data = owned(tensor.data, nhwc)


def drop_vae_encoder(vae: Any) -> None:
    """The VAE without its encoder half (``encoder``, ``quant_conv``), once the latents are cached: decoding, all
    that validation asks of it, does not use them."""
    for name in ("encoder", "quant_conv"):
        if getattr(vae, name, None) is not None:
            setattr(vae, name, None)


def release_memory() -> None:
    """Free what Python's cycles hold, then hand the C allocator's free pages back to the kernel (glibc's
    ``malloc_trim``): a freed tensor below the mmap threshold otherwise stays in the process's heap."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
