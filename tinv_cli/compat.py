"""The one place tinv calls a private API of a library it depends on, each call with the public alternative that
was tried and why it did not serve. A library upgrade that breaks one of these breaks it here, visibly.

Calls that had a public equivalent were moved to it: ``nn.Embedding.from_pretrained`` wraps a grown token table
without a copy (``sampling/loader.py``, formerly ``nn.Embedding(_weight=, _freeze=)``); ``ParameterDict.items()``
reads an A1111 file's ``string_to_param`` (``formats/detect.py``, formerly ``._parameters``); and the shapes
build's EMA steps each tensor with ``Tensor.lerp_`` (formerly ``torch._foreach_lerp_``; the same arithmetic for a
5 MB model, where fusing the launches saves nothing that matters).
"""

from __future__ import annotations


def reset_accelerate_state() -> None:
    """Forget accelerate's process-wide state, so a second ``Accelerator`` in one process may use another mixed
    precision or accumulation setting.

    accelerate keeps one ``AcceleratorState`` and ``GradientState`` per process (a shared-state singleton) and
    refuses an ``Accelerator`` whose precision differs from the first one's. A second training run in one
    process (a notebook, the Python API, the test suite) is legitimate. Tried: ``Accelerator(...)`` again (refused
    with "AcceleratorState has already been initialized"), ``accelerator.free_memory()`` and
    ``accelerate.utils.release_memory`` (they free tensors, not the state). accelerate's own tests reset it with
    ``_reset_state``; so does this.
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()


def onednn_has_bf16() -> bool:
    """Whether oneDNN does bf16 arithmetic in hardware on this CPU (AVX-512 BF16 or AMX).

    torch has no public query. Tried: ``torch.backends.mkldnn.is_available()`` (says only that oneDNN is built
    in), ``torch.cpu`` (its ISA checks are private too), reading ``/proc/cpuinfo`` flags (Linux only, and
    oneDNN may still decline an ISA the kernel reports). oneDNN's own answer is ``_is_mkldnn_bf16_supported``.
    """
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN, or without this query
        return False
