"""How the trainer runs fast: convolution layout, fused AdamW, micro-batches in one pass, the CPU's bf16.

Each choice here changes speed or memory, never what is learned (the layout and the kernels change float
rounding at most); ``benchmarks/train_changes.py`` measures what each is worth and docs/benchmarks.md has the
figures. Torch is imported inside the functions, as everywhere in the core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Batching the micro-batches may use at most this share of the memory free when training starts.
BATCHING_SHARE = 0.5


def to_channels_last(*modules: Any) -> Callable[[], None]:
    """Put the convolution weights of ``modules`` in channels-last layout; returns what puts them back.

    Convolutions in channels-last (NHWC) layout take the fast kernels: oneDNN's on CPUs, where a bf16
    convolution in the default layout falls back to a generic path many times slower, and the tensor-core ones
    on GPUs. Only the layout changes, never a value, so the modules are handed back as they came.
    """
    import torch

    return _to_layout(torch.channels_last, modules)


def to_contiguous(*modules: Any) -> Callable[[], None]:
    """Put the convolution weights of ``modules`` in the default (NCHW) layout; returns what puts them back."""
    import torch

    return _to_layout(torch.contiguous_format, modules)


def _to_layout(layout: torch.memory_format, modules: tuple[Any, ...]) -> Callable[[], None]:
    import torch

    def has_layout(module: Any) -> bool:
        weights = (p for p in module.parameters() if p.dim() == 4)
        return all(w.is_contiguous(memory_format=layout) for w in weights)

    changed = [m for m in modules if not has_layout(m)]
    for module in changed:
        module.to(memory_format=layout)
    other = torch.contiguous_format if layout == torch.channels_last else torch.channels_last

    def undo() -> None:
        for module in changed:
            module.to(memory_format=other)

    return undo


# What torch.compile is asked for. Inductor's layout optimisation (its own switch to channels-last) is off:
# with it, or with channels-last weights, torch 2.13's inductor gives a zero gradient through this UNet
# pattern, a resnet block whose (shortcut + residual) / output_scale_factor feeds a nearest-neighbour upsample
# (an UpBlock2D), so the vectors would learn from part of the UNet only. The trainer compiles a UNet in the
# default layout with these options; tests/test_speed.py checks compiled and eager training agree.
COMPILE_OPTIONS: dict[str, str | int | bool | Callable[..., Any]] = {"layout_optimization": False}


def compile_unet(unet: Any) -> Callable[..., Any]:
    """``unet`` compiled for the training step: a wrapper (the module is untouched), in the layout and with
    the options under which compiled gradients match eager ones. The caller keeps ``unet`` in NCHW layout."""
    import torch

    return torch.compile(unet, options=COMPILE_OPTIONS)


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic in hardware (AVX-512 BF16 or AMX), as oneDNN sees it."""
    from tinv_cli import compat

    return compat.onednn_has_bf16()


def fused_adamw(device: torch.device) -> bool:
    """Whether torch has the one-kernel AdamW for ``device``: CUDA always, CPUs from torch 2.4. On CUDA it also
    lets fp16's gradient scaler skip a step on inf/NaN without reading the check back to the host."""
    import torch

    if device.type == "cuda":
        return True
    major, minor = (int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    return device.type == "cpu" and (major, minor) >= (2, 4)


def activation_bytes(forward: Callable[[], object], resident: Iterable[torch.Tensor]) -> int:
    """Bytes autograd keeps for the backward pass of what ``forward`` computes: its activations.

    ``forward`` runs once; every tensor it saves for backward is counted once per storage, except storages of
    ``resident`` tensors (the weights, which are in memory anyway). The graph is dropped before returning.
    """
    import torch

    skip = {t.untyped_storage().data_ptr() for t in resident}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in skip:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = forward()
    del result
    return sum(saved.values())


def free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device`` (None when unknown)."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        import psutil  # accelerate's dependency, so always installed with tinv

        return int(psutil.virtual_memory().available)
    return None


def batch_micro_steps(micro_steps: int, micro_bytes: int, device: torch.device) -> bool:
    """Whether ``micro_steps`` micro-batches of ``micro_bytes`` activations each should run as one batch.

    One batch takes the same gradient as accumulating them and is faster (a CPU did one batch of 4 in 0.85x the
    time of four batches of 1; GPUs gain more, being busier with more at once), but holds every micro-batch's
    activations at once: it is chosen only while that extra memory stays within ``BATCHING_SHARE`` of what is
    free, so gradient accumulation keeps its purpose of fitting a large batch into little memory.
    """
    if micro_steps <= 1:
        return False
    free = free_memory(device)
    return free is not None and (micro_steps - 1) * micro_bytes <= BATCHING_SHARE * free
