"""``tinv eval NAME``: how well a registry concept's samples show the concept.

Two ways to score, chosen by the concept's base model:

- **A model with a judge** (``builtin:shapes``, ``builtin:scenes``): the judge reads the concept's training
  images to find what the concept is (a colour and shape; for a style what the judge's style heads read: the
  background, or the fill and ground), then reads samples of ``a photo of a <token>``.
  The score is the fraction of samples that are the concept, next to the same fraction for the initializer word
  alone (``a photo of a triangle``): what training added.
- **Any other model**: the Textual Inversion paper's two metrics with a CLIP model found on this machine: the
  mean cosine similarity of sample and training image embeddings, and of sample embeddings and the prompt's
  text with the concept's token left out. Without a local CLIP model this is a ``ModelError`` that says what
  to download; nothing is fetched behind the user's back.

Either way a picture is written: the training images, the samples and (with a judge) the baseline samples,
side by side.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.errors import DataError, ModelError, TinvError
from tinv_cli.paths import check_folder

if TYPE_CHECKING:
    from PIL import Image

    from tinv_cli.registry.entry import Entry
    from tinv_cli.registry.store import Registry

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
OBJECT_PROMPT = "a photo of a {}"
STYLE_PROMPT = "a painting in the style of {}"
EVAL_BATCH = 64  # samples per pipeline call
_PANEL_COLUMNS = 4
_PANEL_IMAGES = 16


@dataclass(frozen=True)
class EvalOptions:
    samples: int = 32
    steps: int = 20
    guidance: float = 7.5
    seed: int = 0
    device: str = "auto"
    clip_model: str = DEFAULT_CLIP_MODEL
    out: Path | None = None  # the picture; default <name>-eval.png in the working folder
    # The base model to sample on, for entries that recorded none (pulled or imported) or to try another;
    # default: the one the entry was trained on.
    model: str | None = None
    revision: str | None = None
    # How a single-file --model is read ([model] config and prediction); an entry's own base uses what it
    # recorded.
    model_config: str | None = None
    prediction: str = "auto"
    # Reference images of the concept, for entries that carry none (an imported A1111 file has no images).
    images: Path | None = None

    def check(self) -> None:
        from tinv_cli.errors import TinvError
        from tinv_cli.sampling.sample import MAX_STEPS

        # The same step bound as `tinv sample`; 1000 samples is ten times the default's 32 and already an hour's
        # work on a GPU, enough for any score to settle.
        for name, most in (("samples", 1000), ("steps", MAX_STEPS)):
            if getattr(self, name) < 1:
                raise TinvError(
                    f"{name} must be at least 1, not {getattr(self, name)}", "pass a positive number"
                )
            if getattr(self, name) > most:
                raise TinvError(
                    f"{name} must be at most {most}, not {getattr(self, name)}", "pass a smaller number"
                )
        if self.guidance < 0:
            raise TinvError(f"guidance must be 0 or more, not {self.guidance}", "7.5 is the usual value")


@dataclass(frozen=True)
class EvalResult:
    entry: str
    model: str
    method: str  # "judge" or "clip"
    prompt: str
    samples: int
    scores: dict[str, float]
    picture: Path
    target: str | None = None  # what the judge read in the training images
    baseline_prompt: str | None = None
    verdicts: dict[str, int] = field(default_factory=dict)  # what the judge read in the samples, counted

    def as_json(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "model": self.model,
            "method": self.method,
            "prompt": self.prompt,
            "baseline_prompt": self.baseline_prompt,
            "target": self.target,
            "samples": self.samples,
            "scores": self.scores,
            "verdicts": self.verdicts,
            "picture": str(self.picture),
        }


Report = Callable[[str], None]


def evaluate(registry: Registry, ref: str, options: EvalOptions, report: Report | None = None) -> EvalResult:
    """Score registry entry ``ref`` (``NAME`` or ``NAME@N``) as the module docstring describes."""
    from tinv_cli.images import list_images
    from tinv_cli.models import refs

    options.check()
    say = report or (lambda message: None)
    entry = registry.get(ref)
    picture = options.out or Path(f"{entry.name}-eval.png")
    # The picture is written last, after every sample: a place it cannot go is refused first.
    check_folder(picture.absolute().parent, "folder for the picture")
    if picture.is_dir():
        raise TinvError(f"{picture} is a folder", "pass --out with a file name, e.g. --out eval.png")
    base = options.model or entry.base_model
    if not base:
        raise ModelError(
            f"{entry.ref} does not record the model it was trained on",
            "pass the model to sample it on with --model (a Hub id, a diffusers folder or a checkpoint file)",
        )
    # A recorded revision belongs to the recorded model only.
    revision = options.revision if options.model else entry.info.get("base_model_revision")
    # --images must exist (list_images says so); an entry without an image folder simply has no images.
    own = entry.path / "concept_images"
    training_images = (
        list_images(options.images) if options.images else list_images(own) if own.is_dir() else []
    )
    if not training_images:
        where = f"in {options.images}" if options.images else "in its registry entry"
        raise DataError(
            f"{entry.ref} has no training images {where}",
            "pass a folder of pictures of the concept with --images",
        )
    # A recorded config and prediction type belong to the recorded checkpoint only, as its revision does.
    recorded = entry.base_model_file
    config = options.model_config if options.model else recorded.get("config")
    prediction = options.prediction if options.model else recorded.get("prediction") or "auto"
    folder = refs.check_model_ref(base, config=config, prediction=prediction)
    judge_folder = folder / "judge" if folder is not None else None
    from tinv_cli.models.single_file import describe_model

    say(describe_model(base, config=config, prediction=prediction) or f"loading {base}")
    pipe = _load(entry, base, revision, options, config, prediction)
    train = [_open(path) for path in training_images]
    if judge_folder is not None and (judge_folder / "judge.json").is_file():
        return _judge_eval(entry, base, pipe, train, judge_folder, options, say, picture)
    return _clip_eval(entry, base, pipe, train, options, say, picture)


def _open(path: Path) -> Image.Image:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def _load(
    entry: Entry, base: str, revision: str | None, options: EvalOptions, config: str | None, prediction: str
) -> Any:
    from tinv_cli.models import loading
    from tinv_cli.sampling import loader

    device = loading.pick_device(options.device)
    pipe = loading.load_pipeline(
        base,
        revision=revision,
        torch_dtype=loading.pick_dtype("auto", device),
        device=device,
        config=config,
        prediction=prediction,
    )
    loader.load_concepts(pipe, [entry.embedding()])
    return loader.use_tinv_expansion(pipe)


def _prompts(entry: Entry) -> tuple[str, str | None]:
    template = STYLE_PROMPT if entry.kind == "style" else OBJECT_PROMPT
    training = entry.info.get("training") or {}
    initializer = training.get("initializer") if isinstance(training, dict) else None
    return template.format(entry.token), template.format(initializer) if initializer else None


def _generate(pipe: Any, entry: Entry, prompt: str, options: EvalOptions) -> list[Image.Image]:
    """``options.samples`` images of ``prompt`` at the model's own size, sample i with seed ``seed + i``."""
    from tinv_cli import families
    from tinv_cli.sampling import loader
    from tinv_cli.sampling.denoise import generate_images

    side = families.for_pipeline(pipe).native_resolution(pipe.unet.config, pipe.vae.config)
    return generate_images(
        pipe,
        [loader.expand_prompt(prompt, [entry.embedding()])] * options.samples,
        [options.seed + i for i in range(options.samples)],
        steps=options.steps,
        guidance=options.guidance,
        size=(side, side),
        batch_size=EVAL_BATCH,
    )


def _judge_eval(
    entry: Entry,
    base: str,
    pipe: Any,
    train: list[Image.Image],
    judge_folder: Path,
    options: EvalOptions,
    say: Report,
    picture: Path,
) -> EvalResult:
    from tinv_cli.shapes.judge import load_judge

    judge = load_judge(judge_folder)
    style = entry.kind == "style"

    def label(verdict: Any) -> str:
        # A style is what the judge's style heads read (builtin:shapes: the background; builtin:scenes: the
        # fill and the ground); an object is its colour and shape.
        return " ".join(verdict.values[h] for h in judge.style_heads) if style else verdict.label

    target, _ = Counter(label(v) for v in judge.classify(train)).most_common(1)[0]
    prompt, baseline_prompt = _prompts(entry)
    say(f"sampling {options.samples} images of {prompt!r}")
    samples = _generate(pipe, entry, prompt, options)
    verdicts = [label(v) for v in judge.classify(samples)]
    scores = {"concept_accuracy": verdicts.count(target) / len(verdicts)}
    baseline: list[Image.Image] = []
    if baseline_prompt is not None:
        say(f"sampling {options.samples} images of {baseline_prompt!r} (the initializer alone)")
        baseline = _generate(pipe, entry, baseline_prompt, options)
        scores["baseline_accuracy"] = [label(v) for v in judge.classify(baseline)].count(target) / len(
            baseline
        )
    panels = [("training images", train), ("concept", samples)]
    if baseline:
        panels.append(("initializer alone", baseline))
    _save_picture(panels, picture)
    return EvalResult(
        entry=entry.ref,
        model=base,
        method="judge",
        prompt=prompt,
        samples=len(samples),
        scores=scores,
        picture=picture,
        target=target,
        baseline_prompt=baseline_prompt,
        verdicts=dict(Counter(verdicts).most_common()),
    )


def _clip_eval(
    entry: Entry,
    base: str,
    pipe: Any,
    train: list[Image.Image],
    options: EvalOptions,
    say: Report,
    picture: Path,
) -> EvalResult:
    model, processor = _load_clip(options.clip_model)
    prompt, _ = _prompts(entry)
    say(f"sampling {options.samples} images of {prompt!r}")
    samples = _generate(pipe, entry, prompt, options)
    # The paper scores the text without the concept: how well the rest of the prompt is still followed.
    text = " ".join(prompt.replace(entry.token, " ").split())
    scores = clip_scores(model, processor, samples, train, text)
    _save_picture([("training images", train), ("concept", samples)], picture)
    return EvalResult(
        entry=entry.ref,
        model=base,
        method="clip",
        prompt=prompt,
        samples=len(samples),
        scores=scores,
        picture=picture,
    )


def _load_clip(ref: str) -> tuple[Any, Any]:
    from transformers import CLIPModel, CLIPProcessor

    try:
        model = CLIPModel.from_pretrained(ref, local_files_only=True)
        processor = CLIPProcessor.from_pretrained(ref, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"no CLIP model {ref!r} on this machine, so the image and text similarity metrics cannot be computed",
            f"download it once with `hf download {ref}`, or pass --clip-model with a local CLIP folder "
            "(concepts trained on builtin:shapes are scored by its judge and need none)",
        ) from exc
    return model.eval(), processor


def clip_scores(
    model: Any, processor: Any, samples: Sequence[Image.Image], train: Sequence[Image.Image], text: str
) -> dict[str, float]:
    """Mean pairwise cosine similarity of sample and training image embeddings, and of sample embeddings and
    ``text``'s embedding."""
    import torch

    with torch.no_grad():

        def embed_images(images: Sequence[Image.Image]) -> torch.Tensor:
            pixels = processor(images=list(images), return_tensors="pt")["pixel_values"]
            features = model.get_image_features(pixel_values=pixels)
            features = getattr(features, "pooler_output", features)
            return torch.nn.functional.normalize(features, dim=-1)

        sample_embeds, train_embeds = embed_images(samples), embed_images(train)
        tokens = processor(text=[text], return_tensors="pt", padding=True)
        text_features = model.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask")
        )
        text_features = getattr(text_features, "pooler_output", text_features)
        text_embed = torch.nn.functional.normalize(text_features, dim=-1)
    return {
        "image_similarity": float((sample_embeds @ train_embeds.T).mean()),
        "text_similarity": float((sample_embeds @ text_embed.T).mean()),
    }


def _save_picture(panels: Sequence[tuple[str, Sequence[Image.Image]]], out: Path) -> Path:
    """Panels side by side, each a 4-column grid of up to 16 images under its title; small images are enlarged
    (nearest neighbour) to 64 px so a 32 px sample stays readable."""
    from PIL import Image, ImageDraw, ImageFont

    from tinv_cli.training.metrics import image_grid, save_png

    cell = max(64, max(image.width for _, images in panels for image in images[:1]))
    grids = []
    for title, images in panels:
        shown = [
            image.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
            for image in images[:_PANEL_IMAGES]
        ]
        grids.append((title, image_grid(shown, columns=min(_PANEL_COLUMNS, len(shown)))))
    title_height, gap = 16, 8
    width = sum(grid.width for _, grid in grids) + gap * (len(grids) - 1)
    height = title_height + max(grid.height for _, grid in grids)
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    x = 0
    for title, grid in grids:
        draw.text((x + 2, 2), title, fill="black", font=font)
        picture.paste(grid, (x, title_height))
        x += grid.width + gap
    return save_png(picture, out)
