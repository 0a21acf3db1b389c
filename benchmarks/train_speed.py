"""Seconds per optimisation step and peak memory of Textual Inversion on Stable Diffusion 1.5-sized models.

    .venv/bin/python benchmarks/train_speed.py             # writes its section of docs/benchmarks.md
    .venv/bin/python benchmarks/train_speed.py --no-write  # prints only
    .venv/bin/python benchmarks/train_speed.py --example-script ~/diffusers/examples/textual_inversion/textual_inversion.py

Three ways to take one optimisation step (batch 1, no gradient accumulation), side by side in one run:

- (a) the diffusers example, examples/textual_inversion/textual_inversion.py, reimplemented step for step: the
  example's dataset item (open the image, resize, flip, tokenize a template), the VAE encode and
  ``latent_dist.sample()``, text encoder, UNet, MSE loss, backward, AdamW over the whole token-embedding matrix,
  the restore of every row but the placeholder's, and ``loss.item()`` for the log; its precision handling
  (UNet and VAE in the weight dtype, the text encoder in fp32 under accelerate's autocast);
- (b) tinv's trainer: ``tinv_cli.training.recipe.train`` itself on the in-memory pipeline, timed through its callbacks;
- (c) the floor: the text encoder and UNet forward and backward alone, set up as tinv sets them up (dtype,
  memory format), on fixed inputs: no data, no VAE, no optimizer.

The models have SD 1.5's layer sizes and random weights (UNet 860M parameters, VAE 84M, CLIP ViT-L/14 text
encoder 123M with a 49,408-row token table), built in the measuring process in the dtypes each variant holds
them in. The tokenizer is tests/assets/tokenizer with filler entries appended up to CLIP's 49,408 (the special
tokens last, at CLIP's ids), so the token table, the example's optimizer state and its restore have their real
sizes. Each variant runs in its own process, so memory peaks do not mix: on Linux the peak resident memory from
the moment the models are built (``/proc/self/clear_refs``), and beside it the peak from process start (model
building included, what a user sees); on CUDA the peak allocated. The reimplementation builds its models in
the target dtype, where the example script loads fp32 weights and then casts the UNet and VAE, so its peak from
start is lower than the script's. ``--example-script PATH`` makes (a) the script itself: run twice (3 and 9
steps) on the random models saved as a diffusers folder, s/step the marginal cost, memory the process's
whole peak. ``--model`` sdxl (tinv only), tiny and tiny-sdxl serve benchmarks/gpu_check.py. The three processes take their steps in lockstep, one step each in turn (the order rotating every
round), so a machine whose load changes while the benchmark runs slows all three alike; a step's time runs from
the go-ahead to the end of the step (a device sync on CUDA). Step times are the median of the timed steps.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from report import (
    cpu_flags,
    cpu_model,
    markers,
    write_section,
)  # this folder's shared CPU name and docs writer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = {"a": "diffusers example", "b": "tinv", "c": "floor"}
MODELS = {"sd15": "SD 1.5-sized", "sdxl": "SDXL-sized", "tiny": "tiny SD", "tiny-sdxl": "tiny SDXL"}
CLIP_VOCAB = 49408
TOKEN = "<bench-toy>"
INITIALIZER = "toy"
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
MIXED = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}


# --------------------------------------------------------------------------------------------------------------
# The model: SD 1.5's sizes, random weights.


def clip_sized_tokenizer(folder: Path) -> Any:
    """tests/assets/tokenizer grown to CLIP's 49,408 entries: fillers (never produced by its merges) go before
    the two special tokens, which end up at 49406 and 49407 as in CLIP."""
    import shutil

    from transformers import CLIPTokenizer

    from tests.tiny import TOKENIZER_DIR

    shutil.copytree(TOKENIZER_DIR, folder, dirs_exist_ok=True)
    vocab = json.loads((TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    specials = ["<|startoftext|>", "<|endoftext|>"]
    words = [w for w, _ in sorted(vocab.items(), key=lambda item: item[1]) if w not in specials]
    words += [f"filler{i}" for i in range(CLIP_VOCAB - len(words) - len(specials))]
    grown = {word: i for i, word in enumerate(words + specials)}
    (folder / "vocab.json").write_text(json.dumps(grown), encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    if len(tokenizer) != CLIP_VOCAB:
        raise RuntimeError(f"the tokenizer has {len(tokenizer)} entries, not {CLIP_VOCAB}")
    return tokenizer


def _random_init(module: Any, seed: int) -> None:
    """PyTorch's default weight initialisation (uniform in +-1/sqrt(fan_in)), norms at 1, biases at 0, written
    straight into the module's storage: much faster than building 860M parameters eagerly."""
    import math

    import torch

    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() == 1:
                # Norm scales at 1; norm shifts and every other bias at 0.
                param.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
                continue
            bound = 1.0 / math.sqrt(param[0].numel())
            param.copy_(torch.empty(param.shape).uniform_(-bound, bound, generator=generator))


def build_modules(dtypes: dict[str, Any], device: Any, seed: int = 0) -> dict[str, Any]:
    """SD 1.5-shaped ``text_encoder``, ``unet``, ``vae`` and scheduler, each module in ``dtypes[name]``."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.tiny import SCHEDULER_CONFIG

    def unet() -> Any:
        return UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,
        )

    def vae() -> Any:
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )

    def text_encoder() -> Any:
        return CLIPTextModel(
            CLIPTextConfig(
                vocab_size=CLIP_VOCAB,
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=77,
                hidden_act="quick_gelu",
                projection_dim=768,
                bos_token_id=CLIP_VOCAB - 2,
                eos_token_id=CLIP_VOCAB - 1,
                pad_token_id=CLIP_VOCAB - 1,
            )
        )

    modules: dict[str, Any] = {}
    for i, (name, make) in enumerate((("text_encoder", text_encoder), ("unet", unet), ("vae", vae))):
        modules[name] = materialise(make, dtypes[name], device, seed + i)
    modules["scheduler"] = PNDMScheduler(**SCHEDULER_CONFIG)
    return modules


def materialise(make: Any, dtype: Any, device: Any, seed: int) -> Any:
    """``make()`` built on the meta device, then given storage in ``dtype`` and random weights: the fp32 copy
    never exists."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            module = make()
    finally:
        torch.set_default_dtype(previous)
    module.to_empty(device=device)
    _random_init(module, seed)
    for buffer_name, buffer in module.named_buffers():
        if buffer_name.endswith("position_ids"):  # CLIP's only buffer: 0 .. 76
            buffer.copy_(torch.arange(buffer.shape[-1], device=device).expand_as(buffer))
    return module.eval()


def clip_text_config(width: int, layers: int, heads: int, act: str) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=CLIP_VOCAB,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=width,
        bos_token_id=CLIP_VOCAB - 2,
        eos_token_id=CLIP_VOCAB - 1,
        pad_token_id=CLIP_VOCAB - 1,
    )


def sdxl_pipeline(dtype: Any, work: Path, seed: int = 0) -> Any:
    """SDXL base 1.0's layer sizes, random weights: UNet 2.6B parameters (transformer depths 1, 2, 10), CLIP
    ViT-L and OpenCLIP ViT-bigG text encoders, the SD VAE; every module in ``dtype``, on the CPU."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from tests.tiny import SDXL_SCHEDULER_CONFIG

    def unet() -> Any:
        return UNet2DConditionModel(
            sample_size=128,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )

    def vae() -> Any:
        return AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            sample_size=1024,
            scaling_factor=0.13025,
        )

    cpu = torch.device("cpu")
    return StableDiffusionXLPipeline(
        vae=materialise(vae, dtype, cpu, seed + 2),
        text_encoder=materialise(
            lambda: CLIPTextModel(clip_text_config(768, 12, 12, "quick_gelu")), dtype, cpu, seed
        ),
        text_encoder_2=materialise(
            lambda: CLIPTextModelWithProjection(clip_text_config(1280, 32, 20, "gelu")), dtype, cpu, seed + 3
        ),
        tokenizer=clip_sized_tokenizer(work / "tokenizer"),
        tokenizer_2=clip_sized_tokenizer(work / "tokenizer_2"),
        unet=materialise(unet, dtype, cpu, seed + 1),
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER_CONFIG),  # type: ignore[arg-type]
    )


def model_modules(args: argparse.Namespace, dtypes: dict[str, Any], work: Path) -> dict[str, Any]:
    """``text_encoder``, ``unet``, ``vae``, ``scheduler`` and ``tokenizer`` of ``--model`` (an SD 1.x one), on the
    CPU, each module in ``dtypes[name]``."""
    import torch

    if args.model == "tiny":
        from tests.tiny import build_tiny_pipeline

        pipe = build_tiny_pipeline()
        modules = {
            name: getattr(pipe, name).to(dtype=dtypes[name]) for name in ("text_encoder", "unet", "vae")
        }
        return {**modules, "scheduler": pipe.scheduler, "tokenizer": pipe.tokenizer}
    if args.model != "sd15":
        raise SystemExit(
            f"--model {args.model}: the example's and the floor's step are SD 1.x's; use --variants b"
        )
    modules = build_modules(dtypes, torch.device("cpu"))
    return {**modules, "tokenizer": clip_sized_tokenizer(work / "tokenizer")}


def model_pipeline(args: argparse.Namespace, dtype: Any, work: Path) -> Any:
    """The pipeline of ``--model`` that tinv trains on, every module in ``dtype``, on the CPU."""
    from diffusers import StableDiffusionPipeline

    if args.model == "sdxl":
        return sdxl_pipeline(dtype, work)
    if args.model == "tiny-sdxl":
        from tests.tiny import build_tiny_sdxl_pipeline

        return build_tiny_sdxl_pipeline().to(dtype=dtype)
    m = model_modules(args, {"text_encoder": dtype, "unet": dtype, "vae": dtype}, work)
    return StableDiffusionPipeline(
        vae=m["vae"],
        text_encoder=m["text_encoder"],
        tokenizer=m["tokenizer"],
        unet=m["unet"],
        scheduler=m["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


# --------------------------------------------------------------------------------------------------------------
# Memory.


def reset_peak(device: Any) -> tuple[bool, int]:
    """Start counting peak memory now. Returns whether that worked (False where only the whole process's peak
    is known) and the peak so far, from process start: model building included, as a user sees it."""
    import torch

    so_far = read_peak(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return True, so_far
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set size
    except OSError:
        return False, so_far
    return True, so_far


def read_peak(device: Any) -> int:
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Lockstep:
    """A worker's side of the lockstep: it reports ready, then takes one step per "go" from the parent.

    Messages go to the parent on the original stdout; anything a library prints goes to stderr instead.
    """

    def __init__(self, device: Any) -> None:
        self.device = device
        self.out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        self.started = 0.0
        self.times: list[float] = []

    def send(self, **message: Any) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def go(self) -> None:
        """Wait for the parent's go-ahead, then start the clock."""
        if not self.times:
            self.send(event="ready")
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("the parent stopped the benchmark")
        self.started = time.perf_counter()

    def done(self) -> None:
        sync(self.device)
        self.times.append(time.perf_counter() - self.started)
        self.send(event="step", seconds=self.times[-1])


# --------------------------------------------------------------------------------------------------------------
# (a) the diffusers example's step.


class ExampleDataset:
    """The example's TextualInversionDataset item: every step reads and prepares the image again."""

    def __init__(self, image: Path, tokenizer: Any, size: int, placeholder: str) -> None:
        import random

        from tinv_cli.training.templates import OBJECT_TEMPLATES

        self.image, self.tokenizer, self.size, self.placeholder = image, tokenizer, size, placeholder
        self.templates = OBJECT_TEMPLATES
        self.random = random.Random(0)

    def __len__(self) -> int:
        return 100  # the example repeats the images 100 times per epoch

    def __getitem__(self, i: int) -> dict[str, Any]:
        import numpy as np
        import torch
        from PIL import Image

        image = Image.open(self.image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        text = self.random.choice(self.templates).format(self.placeholder)
        input_ids = self.tokenizer(
            text,
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids[0]
        image = image.resize((self.size, self.size), resample=Image.Resampling.BICUBIC)
        if self.random.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = (np.array(image).astype(np.uint8) / 127.5 - 1.0).astype(np.float32)
        return {"input_ids": input_ids, "pixel_values": torch.from_numpy(array).permute(2, 0, 1)}


def run_example(args: argparse.Namespace, work: Path, lock: Lockstep) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    device = lock.device
    weight_dtype = getattr(torch, DTYPES[args.precision])
    m = model_modules(args, {"text_encoder": torch.float32, "unet": weight_dtype, "vae": weight_dtype}, work)
    text_encoder, unet, vae, tokenizer = m["text_encoder"], m["unet"], m["vae"], m["tokenizer"]
    exact, built = reset_peak(device)

    accelerator = Accelerator(mixed_precision=MIXED[args.precision], cpu=device.type == "cpu")
    noise_scheduler = DDPMScheduler.from_config(m["scheduler"].config)
    tokenizer.add_tokens([TOKEN])
    initializer_id = tokenizer.encode(INITIALIZER, add_special_tokens=False)[0]
    placeholder_ids = tokenizer.convert_tokens_to_ids([TOKEN])
    text_encoder.resize_token_embeddings(len(tokenizer))
    token_embeds = text_encoder.get_input_embeddings().weight.data
    with torch.no_grad():
        for token_id in placeholder_ids:
            token_embeds[token_id] = token_embeds[initializer_id].clone()
    vae.requires_grad_(False)
    unet.requires_grad_(False)
    # The example's text_model.encoder / final_layer_norm / embeddings.position_embedding (transformers 5 paths).
    text_encoder.encoder.requires_grad_(False)
    text_encoder.final_layer_norm.requires_grad_(False)
    text_encoder.embeddings.position_embedding.requires_grad_(False)
    optimizer = torch.optim.AdamW(
        text_encoder.get_input_embeddings().parameters(),
        lr=5e-4,
        betas=(0.9, 0.999),
        weight_decay=1e-2,
        eps=1e-8,
    )
    dataset = ExampleDataset(work / "images" / "0.png", tokenizer, args.resolution, TOKEN)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=True, num_workers=0)
    total = args.warmup + args.steps
    lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_training_steps=total)
    text_encoder, optimizer, loader, lr_scheduler = accelerator.prepare(
        text_encoder, optimizer, loader, lr_scheduler
    )
    unet.to(accelerator.device, dtype=weight_dtype)
    vae.to(accelerator.device, dtype=weight_dtype)
    orig_embeds_params = accelerator.unwrap_model(text_encoder).get_input_embeddings().weight.data.clone()

    text_encoder.train()
    batches = iter(loader)
    for _ in range(total):
        lock.go()
        batch = next(batches)
        with accelerator.accumulate(text_encoder):
            latents = vae.encode(batch["pixel_values"].to(dtype=weight_dtype)).latent_dist.sample().detach()
            latents = latents * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            bsz = latents.shape[0]
            timesteps = torch.randint(
                0, noise_scheduler.config.num_train_timesteps, (bsz,), device=latents.device
            ).long()
            noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
            encoder_hidden_states = text_encoder(batch["input_ids"])[0].to(dtype=weight_dtype)
            model_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample
            loss = F.mse_loss(
                model_pred.float(), noise.float(), reduction="mean"
            )  # epsilon: the target is the noise
            accelerator.backward(loss)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
            index_no_updates = torch.ones((len(tokenizer),), dtype=torch.bool)
            index_no_updates[min(placeholder_ids) : max(placeholder_ids) + 1] = False
            with torch.no_grad():
                accelerator.unwrap_model(text_encoder).get_input_embeddings().weight[index_no_updates] = (
                    orig_embeds_params[index_no_updates]
                )
        loss.detach().item()  # the example's per-step log: a host sync
        lock.done()
    peak = read_peak(device)

    # What the example's checkpoint (accelerator.save_state every checkpointing_steps) writes.
    accelerator.save_state(str(work / "example-checkpoint"))
    checkpoint_bytes = sum(p.stat().st_size for p in (work / "example-checkpoint").rglob("*") if p.is_file())
    return _result(args, lock, peak, exact, built, checkpoint_bytes=checkpoint_bytes)


# --------------------------------------------------------------------------------------------------------------
# (b) tinv's trainer.


def bench_project(work: Path, steps: int, resolution: int, precision: str, *, compile: bool = False) -> Any:
    """The one-concept project tinv trains here: batch 1, no accumulation, no checkpoints, images in
    ``work/images``, the rest the default recipe's."""
    from tinv_cli.project.config import Concept, ModelConfig, Project, TrainConfig

    settings = TrainConfig(
        steps=steps,
        batch_size=1,
        gradient_accumulation=1,
        resolution=resolution,
        mixed_precision=MIXED[precision],  # type: ignore[arg-type]
        checkpoint_every=0,
        **({"compile": True} if compile else {}),
    )
    concept = Concept(
        name="bench", token=TOKEN, images=work / "images", initializer=INITIALIZER, train=settings
    )
    return Project(
        path=work / "concepts.toml", model=ModelConfig(base="sd15-random"), concepts={"bench": concept}
    )


def run_tinv(args: argparse.Namespace, work: Path, lock: Lockstep) -> dict[str, Any]:
    import torch

    from tinv_cli.registry.store import Registry
    from tinv_cli.training.recipe import train
    from tinv_cli.training.request import TrainCallbacks, TrainRequest

    os.environ["TINV_HOME"] = str(work / "home")
    pipe = model_pipeline(args, getattr(torch, DTYPES[args.precision]), work)
    total = args.warmup + args.steps
    project = bench_project(work, total, args.resolution, args.precision, compile=args.compile)

    class Steps(TrainCallbacks):
        """The trainer's own loop, paced by the parent: each step starts on a go-ahead."""

        def on_start(self, info: Any) -> None:
            lock.go()

        def on_step(self, step: int, loss: float | None, lr: float, it_s: float | None) -> None:
            lock.done()
            if step < total:
                lock.go()

    exact, built = reset_peak(lock.device)
    summary = train(TrainRequest(project, "bench"), Steps(), pipeline=pipe)
    peak = read_peak(lock.device)
    checkpoint_bytes = sum(p.stat().st_size for p in summary.checkpoint.rglob("*") if p.is_file())
    embedding_bytes = Registry().get(summary.entry).embedding_file().stat().st_size
    return _result(
        args, lock, peak, exact, built, checkpoint_bytes=checkpoint_bytes, embedding_bytes=embedding_bytes
    )


# --------------------------------------------------------------------------------------------------------------
# (c) the floor.


def floor_step(m: dict[str, Any], resolution: int, device: Any) -> Callable[[], None]:
    """The floor's step on ``m``'s text encoder and UNet (frozen, laid out as tinv's trainer lays them out, on
    ``device``): their forward and backward on fixed inputs, the gradient starting at the token embeddings."""
    import torch
    import torch.nn.functional as F

    from tinv_cli.training import speed

    text_encoder, unet, scheduler = m["text_encoder"], m["unet"], m["scheduler"]
    dtype = unet.dtype
    text_encoder.requires_grad_(False).train()
    unet.requires_grad_(False)
    speed.to_channels_last(unet)  # as tinv's trainer lays it out
    # The gradient starts at the token embeddings' output, as it does from tinv's new rows.
    text_encoder.get_input_embeddings().register_forward_hook(
        lambda module, inputs, output: output.detach().requires_grad_(True)
    )
    side = resolution // 2 ** (len(m["vae"].config.block_out_channels) - 1)  # the latents' side
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, side, side, generator=generator).to(device)
    noise = torch.randn(1, 4, side, side, generator=generator).to(device)
    timesteps = torch.tensor([500], device=device)
    prompt = m["tokenizer"]("a photo of a toy", padding="max_length", max_length=77, return_tensors="pt")
    ids = prompt.input_ids.to(device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step() -> None:
        with autocast:
            noisy = scheduler.add_noise(latents, noise, timesteps)
            hidden = text_encoder(ids)[0]
            pred = unet(noisy.to(dtype), timesteps, hidden.to(dtype)).sample
            loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()

    return step


def run_floor(args: argparse.Namespace, work: Path, lock: Lockstep) -> dict[str, Any]:
    import torch

    device = lock.device
    dtype = getattr(torch, DTYPES[args.precision])
    m = model_modules(args, {"text_encoder": dtype, "unet": dtype, "vae": dtype}, work)
    m["text_encoder"], m["unet"] = m["text_encoder"].to(device), m["unet"].to(device)
    exact, built = reset_peak(device)
    step = floor_step(m, args.resolution, device)
    for _ in range(args.warmup + args.steps):
        lock.go()
        step()
        lock.done()
    return _result(args, lock, read_peak(device), exact, built)


def _result(
    args: argparse.Namespace, lock: Lockstep, peak: int, exact: bool, built: int, **extra: Any
) -> dict[str, Any]:
    timed = lock.times[args.warmup :]
    return {
        "variant": args.worker,
        "precision": args.precision,
        "step_s": statistics.median(timed),
        "min_s": min(timed),
        "steps_s": [round(t, 3) for t in timed],
        "warmup_s": [round(t, 3) for t in lock.times[: args.warmup]],
        "peak_bytes": peak,
        "peak_from_build": not exact,
        # From process start, model building included (VmHWM never reset): what a user's process reaches.
        "peak_start_bytes": max(peak, built),
        **extra,
    }


def worker(args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    from PIL import Image

    lock = Lockstep(torch.device(args.device_type))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "images").mkdir()
        pixels = np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(work / "images" / "0.png")
        run = {"a": run_example, "b": run_tinv, "c": run_floor}[args.worker]
        result = run(args, work, lock)
    lock.send(event="result", result=result)


# --------------------------------------------------------------------------------------------------------------
# (a) with --example-script: the diffusers example's own script, run as a user runs it.

SCRIPT_STEPS = (3, 9)  # two runs; the difference of their times is 6 steps' cost, start-up cancelled out


def marginal_step(short: tuple[int, float], long: tuple[int, float]) -> float:
    """Seconds per step from two whole runs (steps, seconds): what the longer run's extra steps cost each, so
    start-up, model loading and saving (the same in both) cancel out."""
    (n_short, t_short), (n_long, t_long) = short, long
    if n_long <= n_short:
        raise ValueError(f"the longer run must take more steps than the shorter ({n_long} <= {n_short})")
    return (t_long - t_short) / (n_long - n_short)


def tqdm_rate(text: str) -> float | None:
    """Seconds per step from the last rate a tqdm bar printed in ``text`` (``1.23s/it`` or ``4.56it/s``), or
    None: a cross-check of the marginal cost, which includes the first steps' warm-up."""
    import re

    found = re.findall(r"(\d+(?:\.\d+)?)\s*(s/it|it/s)", text)
    if not found:
        return None
    value, unit = found[-1]
    rate = float(value)
    return rate if unit == "s/it" else (1.0 / rate if rate else None)


def script_arguments(
    model: Path, images: Path, output: Path, *, steps: int, resolution: int, precision: str
) -> list[str]:
    """The example's flags for the benchmark's run: batch 1, no accumulation, tinv's learning rate, nothing
    saved or validated between steps, no data-loader workers."""
    return [
        "--pretrained_model_name_or_path", str(model), "--train_data_dir", str(images),
        "--placeholder_token", TOKEN, "--initializer_token", INITIALIZER, "--learnable_property", "object",
        "--output_dir", str(output), "--resolution", str(resolution), "--train_batch_size", "1",
        "--gradient_accumulation_steps", "1", "--max_train_steps", str(steps), "--learning_rate", "5e-4",
        "--lr_scheduler", "constant", "--lr_warmup_steps", "0", "--mixed_precision", MIXED[precision],
        "--seed", "0", "--save_steps", "1000000", "--checkpointing_steps", "1000000",
        "--dataloader_num_workers", "0",
        # The script's default tracker, as a user runs it (accelerate skips it where tensorboard is absent);
        # accelerate has no "none", and "all" could reach an online tracker.
        "--report_to", "tensorboard",
    ]  # fmt: skip


def save_random_model(args: argparse.Namespace, folder: Path) -> Path:
    """``--model``'s random weights saved as a diffusers folder, fp32 as on the Hub, for the script to load
    with ``from_pretrained`` (the CLIP-sized tokenizer, the SD 1.5 scheduler config)."""
    import torch

    if not (folder / "model_index.json").is_file():
        pipe = model_pipeline(args, torch.float32, folder.parent / "tokenizer-work")
        pipe.save_pretrained(folder)
    return folder


def script_child(script: str, peaks: str, argv: list[str]) -> None:
    """Runs the example script in this process as ``python SCRIPT ARGS`` would, then writes its peaks
    (resident memory from process start, CUDA memory allocated) to ``peaks``."""
    import atexit
    import runpy

    def write() -> None:
        record: dict[str, Any] = {"rss_bytes": _vm_hwm()}
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            record["cuda_bytes"] = int(torch.cuda.max_memory_allocated())
        Path(peaks).write_text(json.dumps(record), encoding="utf-8")

    atexit.register(write)
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")


def _vm_hwm() -> int:
    """Peak resident memory of this process since it started (VmHWM, never reset here)."""
    import resource

    for line in (
        Path("/proc/self/status").read_text().splitlines() if Path("/proc/self/status").exists() else []
    ):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def run_script(args: argparse.Namespace, precision: str, work: Path, steps: int, log: Any) -> dict[str, Any]:
    """One whole run of the example script for ``steps`` steps: wall time, peaks, its tqdm rate."""
    import numpy as np
    from PIL import Image

    images = work / "images"
    if not images.is_dir():
        images.mkdir(parents=True)
        pixels = np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / "0.png")
    model = save_random_model(args, work / "model")
    output, peaks = work / f"out-{precision}-{steps}", work / f"peaks-{precision}-{steps}.json"
    flags = script_arguments(
        model, images, output, steps=steps, resolution=args.resolution, precision=precision
    )
    command = [
        sys.executable,
        __file__,
        "--script-child",
        args.example_script,
        "--peaks",
        str(peaks),
        "--",
        *flags,
    ]
    log(f"  {precision}: {args.example_script} --max_train_steps {steps}")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the example script failed ({done.returncode}):\n{done.stderr[-4000:]}")
    record = json.loads(peaks.read_text(encoding="utf-8"))
    return {"steps": steps, "seconds": seconds, "tqdm_s": tqdm_rate(done.stderr), **record}


def measure_script(args: argparse.Namespace, precision: str, log: Any) -> dict[str, Any]:
    """Variant (a) as the example script itself: the marginal cost per step of a 9-step over a 3-step run, and
    its peak memory from process start (loading fp32 weights, then casting, included)."""
    cuda = args.device_type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.script_work) if args.script_work else Path(tmp)
        short, long = (run_script(args, precision, work, n, log) for n in SCRIPT_STEPS)
    step = marginal_step((short["steps"], short["seconds"]), (long["steps"], long["seconds"]))
    peak = max(r["cuda_bytes" if cuda else "rss_bytes"] for r in (short, long))
    log(f"{precision} diffusers script    {step:8.2f} s/step (marginal)  peak {peak / 2**30:6.2f} GiB")
    return {
        "variant": "a",
        "precision": precision,
        "source": "script",
        "step_s": step,
        "min_s": step,
        "tqdm_s": long["tqdm_s"],
        "runs_s": [round(short["seconds"], 2), round(long["seconds"], 2)],
        "peak_bytes": peak,
        "peak_start_bytes": peak,
        "rss_bytes": max(short["rss_bytes"], long["rss_bytes"]),
        "peak_from_build": True,
    }


# --------------------------------------------------------------------------------------------------------------
# The run: every precision, every variant, each in its own process.


def machine(device_type: str) -> str:
    import torch

    if device_type == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return (
        f"{cpu_model()}, {os.cpu_count()} logical CPUs (torch uses {torch.get_num_threads()} threads, "
        f"vector unit {torch.backends.cpu.get_cpu_capability()}; {cpu_bf16()}), Python {platform.python_version()}, "
        f"torch {torch.__version__}, {platform.system()} {platform.release()}"
    )


def cpu_bf16() -> str:
    """Whether the CPU does bf16 in hardware, as tinv's trainer decides it (oneDNN), and the flags behind it."""
    from tinv_cli.training.speed import cpu_has_bf16

    flags = [f for f in cpu_flags() if f in ("avx512_bf16", "amx_bf16")]
    seen = ", ".join(flags) if flags else "neither avx512_bf16 nor amx_bf16"
    return f"native bf16: {'yes' if cpu_has_bf16() else 'no'} ({seen} in /proc/cpuinfo)"


def plan(args: argparse.Namespace, precision: str) -> tuple[int, int]:
    """Timed and warm-up steps for ``precision``: as asked, else 5 after 1; 1 after none for bf16 on a CPU
    without bf16 instructions, where one step of the example takes several minutes."""
    from tinv_cli.training.speed import cpu_has_bf16

    slow = args.device_type == "cpu" and precision == "bf16" and not cpu_has_bf16()
    steps = args.steps if args.steps is not None else (1 if slow else 5)
    warmup = args.warmup if args.warmup is not None else (0 if slow else 1)
    return steps, warmup


def measure(args: argparse.Namespace, precision: str, variants: list[str], log: Any) -> dict[str, Any]:
    """One process per variant; their steps in lockstep, the order rotating each round."""
    script = args.example_script and "a" in variants
    stepped = [v for v in variants if not (script and v == "a")]
    with contextlib.ExitStack() as stack:
        results = _lockstep(args, precision, stepped, log, stack) if stepped else {}
    if script:  # the script cannot take its steps in lockstep: it runs on its own, after the others
        results = {"a": measure_script(args, precision, log), **results}
    return results


def _lockstep(
    args: argparse.Namespace, precision: str, variants: list[str], log: Any, stack: contextlib.ExitStack
) -> dict[str, Any]:
    steps, warmup = plan(args, precision)
    started = time.perf_counter()
    logs = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    workers: dict[str, subprocess.Popen[str]] = {}
    for variant in variants:
        command = [
            sys.executable, __file__, "--worker", variant, "--precision", precision,
            "--resolution", str(args.resolution), "--steps", str(steps), "--warmup", str(warmup),
            "--device-type", args.device_type, "--model", args.model,
        ] + (["--compile"] if args.compile else [])  # fmt: skip
        stderr = os.open(logs / f"{variant}.log", os.O_WRONLY | os.O_CREAT)
        stack.callback(os.close, stderr)
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        workers[variant] = process

    def receive(variant: str, event: str) -> dict[str, Any]:
        process = workers[variant]
        line = process.stdout.readline() if process.stdout else ""
        if not line:
            process.wait()
            for other in workers.values():
                other.kill()
            error = (logs / f"{variant}.log").read_text(encoding="utf-8", errors="replace")
            raise SystemExit(f"{VARIANTS[variant]} {precision} failed:\n{error[-4000:]}")
        message = json.loads(line)
        if message["event"] != event:
            raise SystemExit(f"{VARIANTS[variant]}: expected {event}, got {message}")
        return message

    for variant in variants:
        receive(variant, "ready")
    for round_ in range(warmup + steps):
        order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
        for variant in order:
            stdin = workers[variant].stdin
            if stdin is not None:
                stdin.write("go\n")
                stdin.flush()
            seconds = receive(variant, "step")["seconds"]
            log(f"  {precision} round {round_ + 1}: {VARIANTS[variant]} {seconds:.2f} s")
    results = {variant: receive(variant, "result")["result"] for variant in variants}
    for process in workers.values():
        process.wait()
    for variant, result in results.items():
        log(
            f"{precision} {VARIANTS[variant]:<17} {result['step_s']:8.2f} s/step (best {result['min_s']:.2f})  "
            f"peak {result['peak_bytes'] / 2**30:6.2f} GiB after the build, "
            f"{result['peak_start_bytes'] / 2**30:6.2f} GiB from process start"
        )
    log(f"{precision}: {time.perf_counter() - started:.0f} s")
    return results


def gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def section_header(args: argparse.Namespace) -> str:
    memory = "peak allocated CUDA memory" if args.device_type == "cuda" else "peak resident memory (RSS)"
    return "\n".join(
        [
            "## Training speed and memory (`benchmarks/train_speed.py`)",
            "",
            "One optimisation step at batch 1, no accumulation, on models with Stable Diffusion 1.5's layer sizes",
            "and random weights: (a) the diffusers example, examples/textual_inversion/textual_inversion.py, with",
            "its per-step work reimplemented step for step (the dataset item read and prepared again every step, the",
            "VAE encode every step, text encoder, UNet, MSE loss, AdamW over the 49,409-row token table and the",
            "restore of every other row, `loss.item()` every step, UNet and VAE in the weight dtype and the text",
            "encoder in fp32 under accelerate's autocast), (b) `tinv train`'s own code",
            "(`tinv_cli.training.recipe.train` on the in-memory pipeline), (c) the floor: text encoder and UNet",
            "forward and backward alone, on fixed inputs, laid out as tinv lays them out. Each variant runs in its",
            "own process and the three take their steps in turn (lockstep), so a change in the machine's load hits",
            "all three alike. Seconds per step: the median of the timed steps (best in brackets).",
            "",
            f"Memory: the {memory}, twice. *After build* counts from when the models were built, in the dtypes",
            "each variant holds them in; *from start* is the process's whole peak, model building included (on",
            "Linux VmHWM, never reset): what a user's process reaches. The reimplementation is not the script in",
            "memory: the script loads fp32 weights with `from_pretrained` and then casts the frozen UNet and VAE to",
            "the weight dtype, so for a moment it holds an fp32 copy; the reimplementation builds its models",
            "directly in the target dtype, so its peak from start is *lower* than the script's own. Like the",
            "script it keeps the VAE (on the device) for the per-step encodes. `--example-script PATH` runs the",
            "script itself instead (path to diffusers' examples/textual_inversion/textual_inversion.py, from the",
            "diffusers repository; it is not installed with diffusers) on a saved random-weights SD 1.5-sized",
            "folder: its s/step is the marginal cost (9-step run time minus 3-step run time, over 6) and its",
            "memory the whole process's peak. Each precision's block below comes from one run; a later run",
            "replaces only its own precisions.",
        ]
    )


def block(args: argparse.Namespace, precision: str, r: dict[str, dict[str, Any]], command: str) -> str:
    steps, warmup = plan(args, precision)
    a, b, c = r["a"], r["b"], r["c"]
    unit = "peak allocated GiB" if args.device_type == "cuda" else "peak RSS GiB"
    lines = [
        f"<!-- train_speed:{precision}:start -->",
        f"### {precision}, {args.resolution} px, {steps} timed step{'s' * (steps != 1)} after {warmup} warm-up",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine(args.device_type)}",
        "",
        f"| variant | s/step (best) | {unit} after build | {unit} from start | step vs (a) | memory vs (a) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key in "abc":
        v = r[key]
        label = "diffusers example script (marginal s/step)" if v.get("source") == "script" else VARIANTS[key]
        after = "n/a" if v.get("source") == "script" else gib(v["peak_bytes"])
        lines.append(
            f"| ({key}) {label} | {v['step_s']:.2f} ({v['min_s']:.2f}) | {after} | "
            f"{gib(v.get('peak_start_bytes', v['peak_bytes']))} | "
            f"{v['step_s'] / a['step_s']:.2f} | {v['peak_bytes'] / a['peak_bytes']:.2f} |"
        )
    lines += [
        "",
        f"tinv's step is **{a['step_s'] / b['step_s']:.2f}x** faster than the example's (best steps: "
        f"{a['min_s'] / b['min_s']:.2f}x) and takes **{b['step_s'] / c['step_s']:.2f}x** the floor's time "
        f"({b['min_s'] / c['min_s']:.2f}x); its peak memory is **{b['peak_bytes'] / a['peak_bytes']:.2f}x** "
        "the example's.",
        "",
        *(
            [
                "Checkpoints of this run: the example's `accelerator.save_state` folder (text encoder and AdamW "
                f"state over the whole token table) is {a['checkpoint_bytes'] / 1e6:,.0f} MB; tinv's",
            ]
            if "checkpoint_bytes" in a
            else ["Checkpoints of this run: tinv's"]
        ),
        f"checkpoint folder of this one-vector, 768-wide concept is {b['checkpoint_bytes'] / 1e3:,.1f} kB",
        f"and its `learned_embeds.safetensors` {b['embedding_bytes'] / 1e3:,.1f} kB. Measured {time.strftime('%Y-%m-%d')}.",
        f"<!-- train_speed:{precision}:end -->",
    ]
    return "\n".join(lines)


def write_blocks(path: Path, name: str, header: str, blocks: dict[str, str]) -> str:
    """Benchmark ``name``'s section of ``path`` (between ``<!-- name:start -->`` and ``<!-- name:end -->``)
    with ``blocks`` replacing the blocks of the same precisions and every other precision's block kept; the
    other sections of the file are left as they are."""
    import re

    start, end = markers(name)
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    kept: dict[str, str] = {}
    if start in old and end in old:
        inside = old.split(start, 1)[1].split(end, 1)[0]
        pattern = rf"<!-- {name}:(\w+):start -->.*?<!-- {name}:\1:end -->"
        kept = {m.group(1): m.group(0) for m in re.finditer(pattern, inside, flags=re.DOTALL)}
    kept.update(blocks)
    order = sorted(kept, key=lambda p: list(DTYPES).index(p) if p in DTYPES else len(DTYPES))
    text = "\n".join([start, header, "", *("\n\n".join(kept[p] for p in order).splitlines()), end])
    write_section(path, name, text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precisions", help="comma-separated; default fp32,bf16 on a CPU, fp16,bf16 on CUDA")
    parser.add_argument("--resolution", type=int, help="default 256 on a CPU, 512 on CUDA")
    parser.add_argument("--steps", type=int, help="timed steps per variant (default 5; see plan())")
    parser.add_argument("--warmup", type=int, help="untimed steps before them (default 1)")
    parser.add_argument("--variants", default="a,b,c")
    parser.add_argument("--compile", action="store_true", help="tinv with compile = true")
    parser.add_argument("--no-write", action="store_true", help="print the table without updating the docs")
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="sd15",
        help="sd15 (default); sdxl (tinv only: --variants b); tiny, tiny-sdxl: tests/tiny.py's, for checks",
    )
    parser.add_argument(
        "--example-script",
        metavar="PATH",
        help="diffusers' examples/textual_inversion/textual_inversion.py: variant (a) runs that script itself",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--script-work", help=argparse.SUPPRESS)  # keep the saved model between runs
    parser.add_argument("--script-child", help=argparse.SUPPRESS)
    parser.add_argument("--peaks", help=argparse.SUPPRESS)
    parser.add_argument("script_args", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--device-type", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.script_child:
        script_child(args.script_child, args.peaks, args.script_args)
        return
    if args.worker:
        worker(args)
        return

    import torch

    args.device_type = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device_type == "cuda"
    args.resolution = args.resolution or (512 if cuda else 256)
    precisions = (args.precisions or ("fp16,bf16" if cuda else "fp32,bf16")).split(",")
    variants = args.variants.split(",")
    command = "python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]])
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for precision in precisions:
        results[precision] = measure(args, precision, variants, lambda line: print(line, flush=True))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(args.device_type), "results": results}))
    if set(variants) != set(VARIANTS) or args.model != "sd15":
        return
    for precision, r in results.items():
        a, b, c = (r[v]["step_s"] for v in "abc")
        print(
            f"{precision}: tinv is {a / b:.2f}x faster than the example, {b / c:.2f}x the floor; "
            f"memory {r['b']['peak_bytes'] / r['a']['peak_bytes']:.2f}x the example's"
        )
    blocks = {precision: block(args, precision, r, command) for precision, r in results.items()}
    if args.no_write:
        print("\n\n".join(blocks.values()))
    else:
        print(write_blocks(ROOT / "docs" / "benchmarks.md", "train_speed", section_header(args), blocks))


if __name__ == "__main__":
    main()
