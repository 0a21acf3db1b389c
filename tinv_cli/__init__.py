"""tinv: Textual Inversion for Stable Diffusion from the command line.

The core modules (project file, registry, formats, pipeline loading) are usable as a library;
heavy libraries (torch, diffusers, transformers) are imported only inside the functions that need them.
"""

__version__ = "0.1.0"
