"""`tinv eval`: score a registry concept's samples (a judge for builtin:shapes, CLIP metrics elsewhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tinv_cli.cli.app import app
from tinv_cli.cli.options import EntryRef, Json, ModelConfigDir, Prediction, Revision
from tinv_cli.cli.render import emit_json, fields, note, sentence


@app.command("eval")
def eval_command(
    ref: EntryRef,
    samples: Annotated[int, typer.Option("--samples", "-n", min=1, help="Images sampled per prompt.")] = 32,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Denoising steps (DPM++ 2M).")] = 20,
    guidance: Annotated[
        float, typer.Option("--guidance", "-g", min=0.0, help="Classifier-free guidance.")
    ] = 7.5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first sample; sample i has seed + i.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write the picture (default: NAME-eval.png here)."),
    ] = None,
    clip_model: Annotated[
        str,
        typer.Option(
            "--clip-model",
            help="CLIP model for the image and text similarity metrics (a Hub id already downloaded, or a "
            "folder); not used for builtin:shapes concepts, which its judge scores.",
        ),
    ] = "openai/clip-vit-large-patch14",
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Base model to sample on (Hub id, diffusers folder or checkpoint file); default: the one the "
            "entry was trained on. Needed for pulled or imported entries that recorded none.",
        ),
    ] = None,
    revision: Revision = None,
    model_config: ModelConfigDir = None,
    prediction: Prediction = "auto",
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            help="Folder of pictures of the concept to score against, for entries that carry no images.",
            file_okay=False,
        ),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu.")
    ] = "auto",
    json: Json = False,
) -> None:
    """Measure what a concept learned, on the model it was trained on.

    On builtin:shapes the shipped judge reads the training images to find the concept (a colour and shape, or a
    background for a style) and reports the fraction of samples of "a photo of a <token>" that show it, next to
    the same fraction for the initializer word alone. On other models: the Textual Inversion paper's CLIP
    image-image and image-text similarities, with a CLIP model already on this machine. A picture of the
    training images beside the samples is written too.
    """
    from tinv_cli.evaluation.evaluate import EvalOptions, evaluate
    from tinv_cli.registry.store import Registry

    options = EvalOptions(
        samples=samples,
        steps=steps,
        guidance=guidance,
        seed=seed,
        device=device,
        clip_model=clip_model,
        model=model,
        revision=revision,
        model_config=str(model_config.absolute()) if model_config else None,
        prediction=prediction or "auto",
        images=images.absolute() if images else None,
        out=out.absolute() if out else None,
    )
    result = evaluate(Registry(), ref, options, report=None if json else lambda m: note(sentence(m)))
    if json:
        emit_json(result.as_json())
        return
    pairs: list[tuple[str, object]] = [
        ("entry", result.entry),
        ("model", result.model),
        ("method", result.method),
    ]
    if result.target is not None:
        pairs.append(("concept (judged)", result.target))
    pairs.append(("prompt", result.prompt))
    for name, value in result.scores.items():
        label = name.replace("_", " ")
        pairs.append((label, f"{value:.1%}" if name.endswith("accuracy") else f"{value:.4f}"))
    if result.baseline_prompt is not None:
        pairs.append(("baseline prompt", result.baseline_prompt))
    if result.verdicts:
        pairs.append(("samples judged", ", ".join(f"{label} {n}" for label, n in result.verdicts.items())))
    pairs.append(("picture", result.picture))
    fields(pairs)
