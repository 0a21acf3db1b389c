"""tinv: Textual Inversion for Stable Diffusion from the command line, and the same work from Python.

Everything the CLI does is importable from here with the CLI's checks and errors (docs/api.md): train a concept
of a project file, generate images, read and change the registry, import and export embedding files, score a
concept, and load registry concepts into a diffusers pipeline of your own (and out again).

``import tinv_cli`` stays cheap: the error classes are imported with it, every other name on first use, and heavy
libraries (torch, diffusers, transformers) only inside the functions that need them.
"""

from __future__ import annotations

from typing import Any

from tinv_cli.errors import (
    DataError,
    FormatError,
    HubError,
    ModelError,
    NotFoundError,
    ProjectError,
    RegistryError,
    TinvError,
)

__version__ = "0.1.0"

# The Python API: each name and the module that defines it, imported on first use so that `import tinv_cli`
# (and `tinv --help`) loads no ML library.
_LAZY = {
    # generating images
    "generate": "tinv_cli.sampling.sample",
    "SampleOptions": "tinv_cli.sampling.sample",
    "SampleResult": "tinv_cli.sampling.sample",
    # training
    "train": "tinv_cli.training.recipe",
    "TrainRequest": "tinv_cli.training.request",
    "TrainCallbacks": "tinv_cli.training.request",
    "StartInfo": "tinv_cli.training.request",
    "TrainSummary": "tinv_cli.training.request",
    "TrainingInterrupted": "tinv_cli.training.request",
    # project files
    "load_project": "tinv_cli.project.load",
    "find_project": "tinv_cli.project.load",
    "Project": "tinv_cli.project.config",
    # the registry, and files in and out of it
    "Registry": "tinv_cli.registry.store",
    "Entry": "tinv_cli.registry.entry",
    "import_file": "tinv_cli.registry.transfer",
    "export_entry": "tinv_cli.registry.transfer",
    "ImportResult": "tinv_cli.registry.transfer",
    "Embedding": "tinv_cli.embedding",
    # concepts in a pipeline of your own
    "load_registry_concepts": "tinv_cli.sampling.concepts",
    "LoadedConcepts": "tinv_cli.sampling.concepts",
    "load_concepts": "tinv_cli.sampling.loader",
    "unload_concepts": "tinv_cli.sampling.loader",
    "expand_prompt": "tinv_cli.sampling.loader",
    "use_tinv_expansion": "tinv_cli.sampling.loader",
    # evaluation
    "evaluate": "tinv_cli.evaluation.evaluate",
    "EvalOptions": "tinv_cli.evaluation.evaluate",
    "EvalResult": "tinv_cli.evaluation.evaluate",
}
__all__ = [
    "DataError",
    "Embedding",
    "Entry",
    "EvalOptions",
    "EvalResult",
    "FormatError",
    "HubError",
    "ImportResult",
    "LoadedConcepts",
    "ModelError",
    "NotFoundError",
    "Project",
    "ProjectError",
    "Registry",
    "RegistryError",
    "SampleOptions",
    "SampleResult",
    "StartInfo",
    "TinvError",
    "TrainCallbacks",
    "TrainRequest",
    "TrainSummary",
    "TrainingInterrupted",
    "__version__",
    "evaluate",
    "expand_prompt",
    "export_entry",
    "find_project",
    "generate",
    "import_file",
    "load_concepts",
    "load_project",
    "load_registry_concepts",
    "train",
    "unload_concepts",
    "use_tinv_expansion",
]


def __getattr__(name: str) -> Any:
    """A name of ``_LAZY``, from the module that defines it (imported on first use)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tinv_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names with the lazy ones, which are not attributes until first used."""
    return sorted({*globals(), *__all__})
