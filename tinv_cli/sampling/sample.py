"""Generating images with the concepts a prompt names: the core of ``tinv sample`` and its Python API.

    from tinv_cli import generate
    result = generate("A <cat-toy> backpack", num_images=4, seed=1)
    result.images[0].show()
    result.save("samples")

The order of work puts every cheap check before the expensive load: options, then the prompt's concepts (registry
and project), then the base model's text-encoder widths from its config files, and only then the weights.
Image ``i`` is drawn from its own generator seeded ``seed + i``: its starting noise and every noise the sampler
adds are the same whatever the batch size. (Batched matrix products may still round differently in the last
float bit, which moves a rare pixel by one level; bit-identical batching would need batch-invariant kernels.)
Longer than 450 lines because options, model choice, preparation and metadata read best in the order they run.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.errors import NotFoundError, TinvError
from tinv_cli.project.config import DEFAULT_BASE_MODEL
from tinv_cli.sampling import pngmeta
from tinv_cli.sampling.negatives import move_negatives
from tinv_cli.sampling.prompt import PromptConcept, canonical_prompt, pinned_prompt, resolve_concepts

if TYPE_CHECKING:
    from PIL.Image import Image

    from tinv_cli.project.config import Project
    from tinv_cli.registry.store import Registry

# name -> (diffusers class, overrides of the model's scheduler config, AUTOMATIC1111's name for it)
SCHEDULERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "ddim": ("DDIMScheduler", {}, "DDIM"),
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "dpm++2m": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
        "DPM++ 2M",
    ),
    "dpm++2m-karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        "DPM++ 2M Karras",
    ),
    # With its Runge-Kutta warm-up skipped PNDM is PLMS, the sampler the original SD release shipped with.
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}, "PLMS"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun"),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC"),
}
MAX_SEED = 2**32 - 1
# Bounds on what one `tinv sample` may ask for, so a typo fails in a line instead of exhausting memory. SD models
# are trained at 512 to 1024 px; 4096 a side is already 16 to 64 times their area (the latents of one such image
# take about 1 GB in float32 at the UNet's widest layer). Schedulers have 1000 training timesteps, so more steps
# than that repeat timesteps; 100 images per command is more than any grid or batch of samples needs.
MIN_SIDE, MAX_SIDE = 8, 4096
MAX_STEPS = 1000
MAX_IMAGES = 100
_SIZE_RE = re.compile(r"\A\s*(\d+)\s*[xX×]\s*(\d+)\s*\Z")


@dataclass(frozen=True)
class SampleOptions:
    """Everything ``generate`` takes besides the prompt. ``size`` is (width, height); None: the model's own."""

    negative_prompt: str = ""
    move_negatives: bool = True  # a negative concept named in the prompt goes to the negative prompt
    num_images: int = 1
    seed: int | None = None  # None: a random seed, recorded in each image
    steps: int = 30
    guidance: float = 7.5
    scheduler: str = "dpm++2m"
    size: tuple[int, int] | None = None
    model: str | None = None  # default: the project's base model, else the concepts' own
    revision: str | None = None
    model_config: str | None = None  # with prediction: how a checkpoint file is read ([model] config)
    prediction: str = "auto"
    project: Path | None = None  # default: the concepts.toml found from the current folder, if any
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 1
    low_vram: bool = False

    def check(self) -> None:
        """Raise TinvError for an option that cannot work, before anything is loaded."""
        from tinv_cli.models.loading import DEVICES, DTYPES

        for name in ("num_images", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise TinvError(f"{name.replace('_', ' ')} must be at least 1, not {getattr(self, name)}")
        for name, most in (("num_images", MAX_IMAGES), ("steps", MAX_STEPS), ("batch_size", MAX_IMAGES)):
            if getattr(self, name) > most:
                raise TinvError(
                    f"{name.replace('_', ' ')} must be at most {most}, not {getattr(self, name)}",
                    "run the command several times for more images"
                    if name != "steps"
                    else "30 is the usual value",
                )
        if self.guidance < 0:
            raise TinvError(f"guidance must be 0 or more, not {self.guidance}", "7.5 is the usual value")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED - self.num_images:
            raise TinvError(f"seed {self.seed} is out of range", f"use 0 to {MAX_SEED - self.num_images}")
        if self.scheduler not in SCHEDULERS:
            raise TinvError(
                f"unknown scheduler {self.scheduler!r}", f"choose one of: {', '.join(SCHEDULERS)}"
            )
        if self.size is not None and any(side < MIN_SIDE or side % 8 for side in self.size):
            raise TinvError(
                f"size {self.size[0]}x{self.size[1]}: width and height must be multiples of 8",
                "e.g. --size 512x512 or 768x512",
            )
        if self.size is not None and max(self.size) > MAX_SIDE:
            raise TinvError(
                f"size {self.size[0]}x{self.size[1]}: width and height must be {MIN_SIDE} to {MAX_SIDE} px",
                "e.g. --size 512x512 or 1024x1024",
            )
        if self.device not in DEVICES:
            raise TinvError(f"unknown device {self.device!r}", f"choose one of: {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise TinvError(f"unknown dtype {self.dtype!r}", f"choose one of: {', '.join(DTYPES)}")


def parse_size(text: str) -> tuple[int, int]:
    """``"512x768"`` -> ``(512, 768)`` (width, height)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise TinvError(f"size {text!r} is not WIDTHxHEIGHT", "e.g. --size 512x512")
    return int(match[1]), int(match[2])


@dataclass(frozen=True)
class Progress:
    """A progress report: ``stage`` is ``load`` (``message`` says what), ``note`` (something the user should
    know, such as a prompt cut short) or ``denoise`` (``done`` of ``total`` denoising steps over all images)."""

    stage: str
    message: str = ""
    done: int = 0
    total: int = 0


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class ModelChoice:
    base: str
    revision: str | None
    source: str  # option | project | concepts | default
    how: dict[str, Any] = field(default_factory=dict)  # a checkpoint file's config= and prediction=


@dataclass(frozen=True)
class SampleResult:
    """Images and what made them. ``parameters[i]`` and ``metadata[i]`` describe ``images[i]``."""

    prompt: str
    images: tuple[Image, ...]
    seeds: tuple[int, ...]
    parameters: tuple[str, ...]  # AUTOMATIC1111 "parameters" text
    metadata: tuple[dict[str, Any], ...]  # tinv's JSON
    concepts: tuple[PromptConcept, ...]
    model: ModelChoice
    size: tuple[int, int]
    options: SampleOptions = field(repr=False)

    def save(self, out_dir: Path, *, grid: bool = False) -> list[Path]:
        """Write the images (and a labelled grid) as PNGs with their metadata; returns the paths written."""
        from tinv_cli.sampling.output import save_result

        return save_result(self, Path(out_dir), grid=grid)


def _find_project(explicit: Path | None) -> Project | None:
    from tinv_cli.project.load import find_project, load_project

    if explicit is not None:
        return load_project(explicit, check_images=False)
    try:
        path = find_project()
    except NotFoundError:
        if os.environ.get("TINV_PROJECT"):
            raise  # a project was asked for and is missing: say so rather than sample without it
        return None
    return load_project(path, check_images=False)


class _LazyProject:
    """Reads the project file on first use only: a prompt whose concepts are all in the registry, sampled with
    --model, works even next to a concepts.toml that does not parse."""

    def __init__(self, explicit: Path | None) -> None:
        self.explicit = explicit
        self.loaded = False
        self.value: Project | None = None

    def __call__(self) -> Project | None:
        if not self.loaded:
            self.value = _find_project(self.explicit)
            self.loaded = True
        return self.value


def choose_model(
    options: SampleOptions, concepts: list[PromptConcept], project: Callable[[], Project | None]
) -> ModelChoice:
    """``--model``, else the project's base model, else the first one a concept records, else SD 1.5."""
    from tinv_cli.models.single_file import how_to_read

    def _how(recorded: Any) -> dict[str, Any]:
        return how_to_read(options.model_config, options.prediction, recorded)

    if options.model:
        return ModelChoice(options.model, options.revision, "option", _how(None))
    loaded = project()
    if loaded is not None:
        revision = options.revision or loaded.model.revision
        return ModelChoice(loaded.model.base, revision, "project", _how(vars(loaded.model)))
    for concept in concepts:
        if concept.entry.base_model:
            revision = options.revision or concept.entry.info.get("base_model_revision")
            return ModelChoice(
                concept.entry.base_model, revision, "concepts", _how(concept.entry.base_model_file)
            )
    return ModelChoice(DEFAULT_BASE_MODEL, options.revision, "default")


def set_scheduler(pipe: Any, name: str) -> None:
    """Replace the pipeline's scheduler with ``name``'s, built from the model's own scheduler config (so its
    noise schedule and prediction type are kept)."""
    import diffusers

    class_name, overrides, _ = SCHEDULERS[name]
    scheduler_class = getattr(diffusers, class_name)
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config, **overrides)


def _place(pipe: Any, device: str, low_vram: bool) -> None:
    if low_vram and device == "cuda":
        # Moves each model to the GPU only while it runs: about a third of the memory, somewhat slower.
        pipe.enable_model_cpu_offload()
        return
    if low_vram:
        pipe.enable_attention_slicing()
    pipe.to(device)


@dataclass(frozen=True)
class Prepared:
    """A pipeline with the prompt's concepts loaded, and the prompt texts as the pipeline must be given them."""

    pipe: Any
    prompt: str
    negative_prompt: str
    text: str  # the prompt with multi-vector concepts spelled out (<x> <x>_1 ...)
    negative_text: str
    concepts: tuple[PromptConcept, ...]
    model: ModelChoice
    device: str
    dtype: str
    size: tuple[int, int]


def prepare(
    prompt: str,
    options: SampleOptions,
    *,
    registry: Registry | None = None,
    progress: ProgressCallback | None = None,
) -> Prepared:
    """Check the options, find the prompt's concepts and the base model, and load both.

    Every check that needs no weights comes first, the width check included when the model's config files are
    on this machine; ``loader.load_concepts`` checks the widths again against the loaded weights.
    """
    from tinv_cli import families
    from tinv_cli.models import configs, loading, refs, single_file
    from tinv_cli.registry.store import Registry
    from tinv_cli.sampling import loader

    report = progress or _ignore
    options.check()
    prompt, negative = canonical_prompt(prompt), canonical_prompt(options.negative_prompt)
    project = _LazyProject(options.project)
    concepts = resolve_concepts([prompt, negative], registry or Registry(), project)
    if options.move_negatives:
        prompt, negative, moved = move_negatives(prompt, negative, concepts)
        for note in moved:
            report(Progress("note", note))
    for concept in concepts:
        if concept.note:  # a token more than one entry has: say which one the prompt gets
            report(Progress("note", concept.note))
    embeddings = [concept.embedding() for concept in concepts]
    choice = choose_model(options, concepts, project)
    refs.check_model_ref(choice.base, **choice.how)
    known_widths = configs.model_widths_from_config(choice.base, choice.revision, **choice.how)
    if known_widths is not None:
        for embedding in embeddings:
            loader.check_fits(embedding, known_widths)
    device = loading.pick_device(options.device)
    dtype = loading.pick_dtype(options.dtype, device)

    found = single_file.describe_model(choice.base, **choice.how)  # a checkpoint file, named before it loads
    report(Progress("load", found or f"loading {choice.base}"))
    pipe: Any = loading.load_pipeline(choice.base, revision=choice.revision, torch_dtype=dtype, **choice.how)
    if embeddings:
        count = len(embeddings)
        report(Progress("load", f"loading {count} concept{'s' if count != 1 else ''}"))
    loader.load_concepts(pipe, embeddings)
    loader.use_tinv_expansion(pipe)
    text = loader.expand_prompt(prompt, embeddings)
    negative_text = loader.expand_prompt(negative, embeddings)
    for label, written in (("prompt", text), ("negative prompt", negative_text)):
        overflow = loader.prompt_overflow(pipe, written, embeddings)
        if overflow is not None:
            report(Progress("note", overflow.replace("the prompt", f"the {label}", 1)))
    set_scheduler(pipe, options.scheduler)
    _place(pipe, device, options.low_vram)
    native = families.for_pipeline(pipe).native_resolution(pipe.unet.config, pipe.vae.config)
    return Prepared(
        pipe=pipe,
        prompt=prompt,
        negative_prompt=negative,
        text=text,
        negative_text=negative_text,
        concepts=tuple(concepts),
        model=choice,
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        size=options.size or (native, native),
    )


def _ignore(event: Progress) -> None:
    return None


def denoise(
    prepared: Prepared, options: SampleOptions, seeds: list[int], report: ProgressCallback
) -> list[Image]:
    """One image per seed, ``options.batch_size`` at a time (``denoise.generate_images``)."""
    from tinv_cli.sampling.denoise import generate_images

    return generate_images(
        prepared.pipe,
        [prepared.text] * len(seeds),
        seeds,
        steps=options.steps,
        guidance=options.guidance,
        size=prepared.size,
        negative_prompt=prepared.negative_text,
        batch_size=options.batch_size,
        on_step=lambda done, total: report(Progress("denoise", done=done, total=total)),
    )


def _command(prepared: Prepared, options: SampleOptions, seed: int) -> str:
    """The ``tinv sample`` command that makes this one image again, concepts pinned to their versions."""
    width, height = prepared.size
    parts = ["tinv", "sample", pinned_prompt(prepared.prompt, prepared.concepts), "--seed", str(seed)]
    if prepared.negative_prompt:
        parts += ["--negative", pinned_prompt(prepared.negative_prompt, prepared.concepts)]
    parts += [
        "--steps",
        str(options.steps),
        "--guidance",
        str(options.guidance),
        "--scheduler",
        options.scheduler,
    ]
    parts += ["--size", f"{width}x{height}", "--model", prepared.model.base]
    if prepared.model.revision:
        parts += ["--revision", prepared.model.revision]
    if prepared.dtype != "float32":
        parts += ["--dtype", {"float16": "fp16", "bfloat16": "bf16"}.get(prepared.dtype, prepared.dtype)]
    return shlex.join(parts)


def describe(prepared: Prepared, options: SampleOptions, seed: int, index: int) -> tuple[str, dict[str, Any]]:
    """The A1111 ``parameters`` text and tinv's metadata of one image."""
    from tinv_cli import __version__
    from tinv_cli.models.refs import model_label

    width, height = prepared.size
    settings = {
        "Steps": options.steps,
        "Sampler": SCHEDULERS[options.scheduler][2],
        "CFG scale": options.guidance,
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model hash": pngmeta.model_hash(prepared.model.base),
        "Model": model_label(prepared.model.base),
        "TI hashes": pngmeta.ti_hashes(prepared.concepts),
        "Version": f"tinv {__version__}",
    }
    metadata = {
        "prompt": prepared.prompt,
        "negative_prompt": prepared.negative_prompt,
        "seed": seed,
        "index": index,
        "steps": options.steps,
        "guidance": options.guidance,
        "scheduler": options.scheduler,
        "width": width,
        "height": height,
        "model": prepared.model.base,
        "model_revision": prepared.model.revision,
        "model_source": prepared.model.source,
        "device": prepared.device,
        "dtype": prepared.dtype,
        "concepts": [concept.to_dict() for concept in prepared.concepts],
        "command": _command(prepared, options, seed),
        "tinv_version": __version__,
    }
    return pngmeta.format_parameters(prepared.prompt, prepared.negative_prompt, settings), metadata


def run(
    prompt: str,
    options: SampleOptions,
    *,
    registry: Registry | None = None,
    progress: ProgressCallback | None = None,
) -> SampleResult:
    """``prepare`` then ``denoise``: the whole of ``tinv sample`` but writing the files."""
    report = progress or _ignore
    prepared = prepare(prompt, options, registry=registry, progress=report)
    seed = options.seed if options.seed is not None else secrets.randbelow(MAX_SEED - options.num_images)
    seeds = [seed + i for i in range(options.num_images)]
    images = denoise(prepared, options, seeds, report)
    described = [describe(prepared, options, image_seed, i) for i, image_seed in enumerate(seeds)]
    return SampleResult(
        prompt=prepared.prompt,
        images=tuple(images),
        seeds=tuple(seeds),
        parameters=tuple(text for text, _ in described),
        metadata=tuple(meta for _, meta in described),
        concepts=prepared.concepts,
        model=prepared.model,
        size=prepared.size,
        options=options,
    )


def generate(
    prompt: str,
    *,
    registry: Registry | None = None,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> SampleResult:
    """Generate images for ``prompt``, loading every concept it names; ``options`` are SampleOptions fields.

    ``result.images`` are PIL images; ``result.save(folder)`` writes them with their metadata.
    """
    return run(prompt, SampleOptions(**options), registry=registry, progress=progress)
