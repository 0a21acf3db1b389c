"""tinv: Textual Inversion for Stable Diffusion from the command line.

The core modules (project file, registry, formats, pipeline loading) are usable as a library;
heavy libraries (torch, diffusers, transformers) are imported only inside the functions that need them.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# The Python API, imported on first use so that `import tinv_cli` (and `tinv --help`) stays free of torch.
_LAZY = {
    "generate": "tinv_cli.sampling.sample",
    "SampleResult": "tinv_cli.sampling.sample",
    "SampleOptions": "tinv_cli.sampling.sample",
}
__all__ = ["SampleOptions", "SampleResult", "__version__", "generate"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tinv_cli' has no attribute {name!r}")
