"""Seconds per optimisation step and peak memory of Textual Inversion on Stable Diffusion 1.5-sized models.

    .venv/bin/python benchmarks/train_speed.py             # writes its section of docs/benchmarks.md
    .venv/bin/python benchmarks/train_speed.py --no-write  # prints only

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
the moment the models are built (``/proc/self/clear_refs``), so building them does not count; on CUDA the peak
allocated. The three processes take their steps in lockstep, one step each in turn (the order rotating every
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
from pathlib import Path
from typing import Any

from report import cpu_model, markers, write_section  # this folder's shared CPU name and docs writer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = {"a": "diffusers example", "b": "tinv", "c": "floor"}
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
    import torch
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
        # Built on the meta device, then given storage in its final dtype: the fp32 copy never exists.
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtypes[name])
        try:
            with torch.device("meta"):
                module = make()
        finally:
            torch.set_default_dtype(previous)
        module.to_empty(device=device)
        _random_init(module, seed + i)
        for buffer_name, buffer in module.named_buffers():
            if buffer_name.endswith("position_ids"):  # CLIP's only buffer: 0 .. 76
                buffer.copy_(torch.arange(buffer.shape[-1], device=device).expand_as(buffer))
        modules[name] = module.eval()
    modules["scheduler"] = PNDMScheduler(**SCHEDULER_CONFIG)
    return modules


# --------------------------------------------------------------------------------------------------------------
# Memory.


def reset_peak(device: Any) -> bool:
    """Start counting peak memory now; False where only the whole process's peak is known."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set size
    except OSError:
        return False
    return True


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
    tokenizer = clip_sized_tokenizer(work / "tokenizer")
    m = build_modules(
        {"text_encoder": torch.float32, "unet": weight_dtype, "vae": weight_dtype}, torch.device("cpu")
    )
    text_encoder, unet, vae = m["text_encoder"], m["unet"], m["vae"]
    exact = reset_peak(device)

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
    return _result(args, lock, peak, exact, checkpoint_bytes=checkpoint_bytes)


# --------------------------------------------------------------------------------------------------------------
# (b) tinv's trainer.


def run_tinv(args: argparse.Namespace, work: Path, lock: Lockstep) -> dict[str, Any]:
    import torch
    from diffusers import StableDiffusionPipeline

    from tinv_cli.project.config import Concept, ModelConfig, Project, TrainConfig
    from tinv_cli.registry.store import Registry
    from tinv_cli.training.recipe import train
    from tinv_cli.training.request import TrainCallbacks, TrainRequest

    os.environ["TINV_HOME"] = str(work / "home")
    dtype = getattr(torch, DTYPES[args.precision])
    m = build_modules({"text_encoder": dtype, "unet": dtype, "vae": dtype}, torch.device("cpu"))
    pipe = StableDiffusionPipeline(
        vae=m["vae"],
        text_encoder=m["text_encoder"],
        tokenizer=clip_sized_tokenizer(work / "tokenizer"),
        unet=m["unet"],
        scheduler=m["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    total = args.warmup + args.steps
    settings = TrainConfig(
        steps=total,
        batch_size=1,
        gradient_accumulation=1,
        resolution=args.resolution,
        mixed_precision=MIXED[args.precision],  # type: ignore[arg-type]
        checkpoint_every=0,
        **({"compile": True} if args.compile else {}),
    )
    concept = Concept(
        name="bench", token=TOKEN, images=work / "images", initializer=INITIALIZER, train=settings
    )
    project = Project(
        path=work / "concepts.toml", model=ModelConfig(base="sd15-random"), concepts={"bench": concept}
    )

    class Steps(TrainCallbacks):
        """The trainer's own loop, paced by the parent: each step starts on a go-ahead."""

        def on_start(self, info: Any) -> None:
            lock.go()

        def on_step(self, step: int, loss: float | None, lr: float, it_s: float | None) -> None:
            lock.done()
            if step < total:
                lock.go()

    exact = reset_peak(lock.device)
    summary = train(TrainRequest(project, "bench"), Steps(), pipeline=pipe)
    peak = read_peak(lock.device)
    checkpoint_bytes = sum(p.stat().st_size for p in summary.checkpoint.rglob("*") if p.is_file())
    embedding_bytes = Registry().get(summary.entry).embedding_file().stat().st_size
    return _result(
        args, lock, peak, exact, checkpoint_bytes=checkpoint_bytes, embedding_bytes=embedding_bytes
    )


# --------------------------------------------------------------------------------------------------------------
# (c) the floor.


def run_floor(args: argparse.Namespace, work: Path, lock: Lockstep) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from tinv_cli.training import speed

    device = lock.device
    dtype = getattr(torch, DTYPES[args.precision])
    tokenizer = clip_sized_tokenizer(work / "tokenizer")
    m = build_modules({"text_encoder": dtype, "unet": dtype, "vae": dtype}, torch.device("cpu"))
    text_encoder, unet = m["text_encoder"].to(device), m["unet"].to(device)
    exact = reset_peak(device)
    text_encoder.requires_grad_(False).train()
    unet.requires_grad_(False)
    speed.to_channels_last(unet)  # as tinv's trainer lays it out
    # The gradient starts at the token embeddings' output, as it does from tinv's new rows.
    text_encoder.get_input_embeddings().register_forward_hook(
        lambda module, inputs, output: output.detach().requires_grad_(True)
    )
    side = args.resolution // 8
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, side, side, generator=generator).to(device)
    noise = torch.randn(1, 4, side, side, generator=generator).to(device)
    timesteps = torch.tensor([500], device=device)
    prompt = tokenizer("a photo of a toy", padding="max_length", max_length=77, return_tensors="pt")
    ids = prompt.input_ids.to(device)
    scheduler = m["scheduler"]
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    for _ in range(args.warmup + args.steps):
        lock.go()
        with autocast:
            noisy = scheduler.add_noise(latents, noise, timesteps)
            hidden = text_encoder(ids)[0]
            pred = unet(noisy.to(dtype), timesteps, hidden.to(dtype)).sample
            loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        lock.done()
    return _result(args, lock, read_peak(device), exact)


def _result(args: argparse.Namespace, lock: Lockstep, peak: int, exact: bool, **extra: Any) -> dict[str, Any]:
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
# The run: every precision, every variant, each in its own process.


def machine(device_type: str) -> str:
    import torch

    if device_type == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return (
        f"{cpu_model()}, {os.cpu_count()} logical CPUs (torch uses {torch.get_num_threads()} threads, "
        f"vector unit {torch.backends.cpu.get_cpu_capability()}), Python {platform.python_version()}, "
        f"torch {torch.__version__}, {platform.system()} {platform.release()}"
    )


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
    with contextlib.ExitStack() as stack:
        return _lockstep(args, precision, variants, log, stack)


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
            "--device-type", args.device_type,
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
            f"peak {result['peak_bytes'] / 2**30:6.2f} GiB"
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
            "and random weights: (a) the diffusers example's per-step work reimplemented faithfully (the dataset",
            "item, VAE encode every step, AdamW over the 49,409-row token table and the restore of every other",
            "row, `loss.item()` every step, UNet and VAE in the weight dtype and the text encoder in fp32 under",
            "autocast), (b) `tinv train`'s own code (`tinv_cli.training.recipe.train` on the in-memory pipeline), (c) the",
            "floor: text encoder and UNet forward and backward alone, on fixed inputs, laid out as tinv lays them",
            "out. Each variant runs in its own process and the three take their steps in turn (lockstep), so a",
            "change in the machine's load hits all three alike. Seconds per step: the median of the timed steps",
            f"(best in brackets). Memory: the {memory} from when the models were built, in the dtypes each",
            "variant holds them in (building them does not count; the example really loads fp32 weights first).",
            "Each precision's block below comes from one run; a later run replaces only its own precisions.",
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
        f"| variant | s/step (best) | {unit} | step vs (a) | memory vs (a) |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in "abc":
        v = r[key]
        lines.append(
            f"| ({key}) {VARIANTS[key]} | {v['step_s']:.2f} ({v['min_s']:.2f}) | {gib(v['peak_bytes'])} | "
            f"{v['step_s'] / a['step_s']:.2f} | {v['peak_bytes'] / a['peak_bytes']:.2f} |"
        )
    lines += [
        "",
        f"tinv's step is **{a['step_s'] / b['step_s']:.2f}x** faster than the example's (best steps: "
        f"{a['min_s'] / b['min_s']:.2f}x) and takes **{b['step_s'] / c['step_s']:.2f}x** the floor's time "
        f"({b['min_s'] / c['min_s']:.2f}x); its peak memory is **{b['peak_bytes'] / a['peak_bytes']:.2f}x** "
        "the example's.",
        "",
        "Checkpoints of this run: the example's `accelerator.save_state` folder (text encoder and AdamW state over",
        f"the whole token table) is {a['checkpoint_bytes'] / 1e6:,.0f} MB; tinv's checkpoint folder of this "
        f"one-vector, 768-wide concept is {b['checkpoint_bytes'] / 1e3:,.1f} kB",
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
    parser.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--device-type", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
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
    if set(variants) != set(VARIANTS):
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
