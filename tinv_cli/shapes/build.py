"""Builds the shapes model from nothing: tokenizer, VAE, text encoder + UNet, and the judge, on a CPU.

    python -m tinv_cli.shapes.build --out DIR [--world shapes|scenes] [--resume] [--work DIR]

A recipe in stages (``tokenizer -> vae -> unet -> judge -> save``), each of which writes its result into the
work folder and is skipped when ``--resume`` finds it there; the two long stages also checkpoint every few
hundred steps and pick up from the last one. Every random draw of step ``k`` comes from a generator seeded by
``(seed, stage, k)``, so a resumed build takes the same steps an uninterrupted one would.

The UNet and the text encoder train together on cached VAE latents (8x8x4 for a 32x32 image), with the SD 1.x
noise schedule and epsilon prediction, so tinv's textual inversion trains on this model exactly as on SD 1.5.
The shipped weights are an exponential moving average of the trained ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from tinv_cli.atomic import write_with
from tinv_cli.shapes import networks, scenes, world
from tinv_cli.shapes.networks import MAX_TOKENS, make_text_encoder, make_unet, make_vae

# The worlds a model can be built on: builtin:shapes is built on "shapes", builtin:scenes on "scenes".
WORLDS: dict[str, ModuleType] = {"shapes": world, "scenes": scenes}


@dataclass(frozen=True)
class BuildConfig:
    world: str = "shapes"
    seed: int = 0
    images: int = 20000
    vae_steps: int = 600
    vae_batch: int = 32
    vae_lr: float = 2e-3
    # The shipped UNet is the EMA after 2,500 steps of a 4,000-step cosine schedule. Training on to 4,000 lowered
    # prompt fidelity (94.6 % against 97.8 %) and made the token embeddings harder for textual inversion to move
    # between: the demo concept then reached 60-70 % instead of 100 % (docs/shapes.md).
    unet_steps: int = 2500
    unet_schedule_steps: int = 4000
    unet_batch: int = 64
    unet_lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    checkpoint_every: int = 250
    device: str = "cpu"
    judge_images: int = 8000
    judge_steps: int = 600
    judge_held_out: int = 3000
    # The noise: builtin:shapes trains on SD 1.5's schedule with plain noise. With it the noisiest training input
    # still carries the latent's mean (at 8x8 latents strongly so: the mean of 64 noise values varies by 1/8),
    # so a model learns to read the ground's brightness from the starting noise instead of the prompt.
    # Offset noise (a random constant per sample and channel, this many standard deviations) makes that mean
    # noise, as zero terminal SNR with v-prediction (Lin et al. 2024) does. On builtin:scenes both fixed the
    # ground, but at 0.35 and more (and with zero SNR) shapes were learned far more slowly; builtin:scenes
    # ships 0.22 and a longer run (WORLD_DEFAULTS, docs/shapes.md). builtin:shapes has no ground to fix.
    offset_noise: float = 0.0
    prediction_type: str = "epsilon"
    zero_terminal_snr: bool = False

    @property
    def world_module(self) -> ModuleType:
        """The world module this build draws from."""
        return WORLDS[self.world]


# What builtin:scenes changes: five attributes, outlines among them, want a sharper VAE and a longer UNet run
# (its cosine schedule run to the end), and its ground, a latent's mean, wants offset noise.
WORLD_DEFAULTS: dict[str, dict[str, Any]] = {
    "scenes": {
        "vae_steps": 3000,
        "unet_steps": 7000,
        "judge_steps": 1000,
        "offset_noise": 0.22,
    }
}


Log = Callable[[str], None]


def _generator(seed: int, stage: int, step: int) -> Any:
    import torch

    return torch.Generator().manual_seed(seed * 1_000_003 + stage * 100_000_019 + step)


def _pixels(scenes_of: ModuleType, seed: int, count: int, start: int = 0) -> Any:
    """Scenes as float32 ``[N, 3, 32, 32]`` in [-1, 1]."""
    import numpy as np
    import torch

    array = np.stack([np.asarray(image) for image in scenes_of.images(seed, count, start)])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _save_atomic(obj: Any, path: Path) -> None:
    import torch

    write_with(path, lambda tmp: torch.save(obj, tmp))


def _lr_at(step: int, cfg: BuildConfig, total: int, peak: float) -> float:
    import math

    if step < cfg.warmup:
        return peak * (step + 1) / cfg.warmup
    # Cosine down to a tenth: the last steps refine with small updates, which the EMA then averages.
    progress = (step - cfg.warmup) / max(1, total - cfg.warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def stage_tokenizer(work: Path, scenes_of: ModuleType = world) -> Any:
    from transformers import CLIPTokenizer

    from tinv_cli.shapes.clip_bpe import write_tokenizer

    folder = work / "tokenizer"
    write_tokenizer(scenes_of.vocabulary(), folder, model_max_length=MAX_TOKENS)
    return CLIPTokenizer.from_pretrained(folder)


def stage_judge(work: Path, cfg: BuildConfig, log: Log) -> Any:
    """The judge, trained on world ``seed + 1`` and measured on world ``seed + 2``: neither is the model's."""
    from tinv_cli.shapes import judge

    folder = work / "judge"
    if (folder / judge.INFO).exists():
        return judge.load_judge(folder)
    net = judge.train_judge(
        cfg.seed + 1, cfg.judge_images, cfg.judge_steps, log, cfg.device, cfg.world_module
    )
    accuracy = judge.held_out_accuracy(net, cfg.seed + 2, cfg.judge_held_out, cfg.world_module)
    log(f"judge held-out accuracy: {accuracy}")
    judge.save_judge(
        net,
        folder,
        {
            "held_out": {"seed": cfg.seed + 2, "images": cfg.judge_held_out, "accuracy": accuracy},
            "trained_on": {"seed": cfg.seed + 1, "images": cfg.judge_images, "steps": cfg.judge_steps},
        },
        cfg.world_module,
    )
    return judge.load_judge(folder)


def stage_vae(work: Path, cfg: BuildConfig, pixels: Any, log: Log) -> Any:
    import torch

    done = work / "vae.pt"
    vae = make_vae(cfg.world_module.SIZE).to(cfg.device)
    if done.exists():
        vae.load_state_dict(torch.load(done, weights_only=True, map_location=cfg.device))
        return vae.eval()
    state_path = work / "vae-state.pt"
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    start = 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=True, map_location=cfg.device)
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    vae.train()
    begin = time.monotonic()
    for step in range(start, cfg.vae_steps):
        gen = _generator(cfg.seed, 1, step)
        batch = pixels[torch.randint(0, len(pixels), (cfg.vae_batch,), generator=gen)].to(cfg.device)
        posterior = vae.encode(batch).latent_dist
        eps = torch.randn(posterior.mean.shape, generator=gen).to(cfg.device)
        latents = posterior.mean + posterior.std * eps
        recon = vae.decode(latents).sample
        # L1 keeps flat colours and edges crisp; the KL term only keeps latents from drifting in scale.
        loss = (recon - batch).abs().mean() + (recon - batch).pow(2).mean() + 1e-6 * posterior.kl().mean()
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg, cfg.vae_steps, cfg.vae_lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 50 == 0:
            log(
                f"vae step {step + 1}/{cfg.vae_steps} loss {loss.item():.4f} ({time.monotonic() - begin:.0f}s)"
            )
        if (step + 1) % cfg.checkpoint_every == 0:
            _save_atomic(
                {"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1}, state_path
            )
    _save_atomic(vae.state_dict(), done)
    return vae.eval()


def stage_latents(work: Path, vae: Any, pixels: Any, log: Log, device: str) -> tuple[Any, Any, float]:
    """VAE posterior mean and std of every image, and the scaling factor that gives latents unit variance."""
    import torch

    path = work / "latents.pt"
    if path.exists():
        saved = torch.load(path, weights_only=True)
        return saved["mean"], saved["std"], float(saved["scale"])
    means, stds = [], []
    with torch.no_grad():
        for chunk in pixels.split(256):
            dist = vae.encode(chunk.to(device)).latent_dist
            means.append(dist.mean.cpu())
            stds.append(dist.std.cpu())
    mean, std = torch.cat(means), torch.cat(stds)
    scale = float(1.0 / mean.std())
    log(f"latents {tuple(mean.shape)}, scaling factor {scale:.4f}")
    _save_atomic({"mean": mean, "std": std, "scale": scale}, path)
    return mean, std, scale


class _Captions:
    """Caption ids for (image, epoch), tokenized once per distinct caption."""

    def __init__(self, tokenizer: Any, seed: int, scenes_of: ModuleType, items: list[Any]) -> None:
        self.tokenizer = tokenizer
        self.seed = seed
        self.caption = scenes_of.caption
        self.items = items
        self.cache: dict[str, Any] = {}

    def ids(self, index: int, draw: int) -> Any:
        import torch

        text = self.caption(self.items[index], self.seed, index * 1000 + draw)
        if text not in self.cache:
            self.cache[text] = torch.tensor(
                self.tokenizer(text, padding="max_length", max_length=MAX_TOKENS, truncation=True).input_ids
            )
        return self.cache[text]


def stage_unet(
    work: Path, cfg: BuildConfig, tokenizer: Any, latents: tuple[Any, Any, float], log: Log
) -> Any:
    import copy

    import torch
    from diffusers import DDPMScheduler

    done = work / "unet.pt"
    unet, text_encoder = (
        make_unet(cfg.world_module.SIZE).to(cfg.device),
        make_text_encoder(tokenizer).to(cfg.device),
    )
    if done.exists():
        saved = torch.load(done, weights_only=True, map_location=cfg.device)
        unet.load_state_dict(saved["unet"])
        text_encoder.load_state_dict(saved["text_encoder"])
        return unet.eval(), text_encoder.eval()
    mean, std, scale = latents
    items = [cfg.world_module.scene(cfg.seed, i) for i in range(cfg.images)]
    captions = _Captions(tokenizer, cfg.seed, cfg.world_module, items)
    scheduler: Any = DDPMScheduler(
        **{
            k: v
            for k, v in scheduler_config(cfg).items()
            if k
            in (
                "num_train_timesteps",
                "beta_start",
                "beta_end",
                "beta_schedule",
                "prediction_type",
                "rescale_betas_zero_snr",
            )
        }
    )
    alphas = scheduler.alphas_cumprod.to(cfg.device)
    snr = alphas / (1 - alphas)
    velocity = cfg.prediction_type == "v_prediction"
    params = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.01)
    ema_unet, ema_text = copy.deepcopy(unet), copy.deepcopy(text_encoder)
    state_path = work / "unet-state.pt"
    start = 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=True, map_location=cfg.device)
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        ema_unet.load_state_dict(state["ema_unet"])
        ema_text.load_state_dict(state["ema_text"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    unet.train()
    text_encoder.train()
    ema_params = [*ema_unet.parameters(), *ema_text.parameters()]
    begin = time.monotonic()
    for step in range(start, cfg.unet_steps):
        gen = _generator(cfg.seed, 2, step)
        index = torch.randint(0, cfg.images, (cfg.unet_batch,), generator=gen)
        epoch = step * cfg.unet_batch // cfg.images
        ids = torch.stack([captions.ids(int(i), epoch) for i in index]).to(cfg.device)
        clean = (mean[index] + std[index] * torch.randn(mean[index].shape, generator=gen)) * scale
        noise = torch.randn(clean.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.unet_batch,), generator=gen)
        if cfg.offset_noise:
            noise = noise + cfg.offset_noise * torch.randn((*clean.shape[:2], 1, 1), generator=gen)
        noisy = scheduler.add_noise(clean, noise, t).to(cfg.device)
        noise, t = noise.to(cfg.device), t.to(cfg.device)
        hidden = text_encoder(ids)[0]
        pred = unet(noisy, t, hidden).sample
        # Min-SNR-5 weighting (Hang et al. 2023): the low-noise steps stop dominating, which roughly
        # triples how fast a diffusion model learns its conditioning; min(SNR, 5) / (SNR + 1) is its form
        # for a velocity target, finite where zero terminal SNR makes SNR 0.
        if velocity:
            target = scheduler.get_velocity(clean, noise.cpu(), t.cpu()).to(cfg.device)
            weight = torch.clamp(snr[t], max=5.0) / (snr[t] + 1)
        else:
            target = noise
            weight = torch.clamp(snr[t], max=5.0) / snr[t]
        loss = (weight * (pred - target).pow(2).mean(dim=(1, 2, 3))).mean()
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg, max(cfg.unet_schedule_steps, cfg.unet_steps), cfg.unet_lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for average, param in zip(ema_params, params, strict=True):
                average.lerp_(param, 1 - decay)
        if (step + 1) % 50 == 0:
            log(
                f"unet step {step + 1}/{cfg.unet_steps} loss {loss.item():.4f} ({time.monotonic() - begin:.0f}s)"
            )
        if (step + 1) % cfg.checkpoint_every == 0:
            _save_atomic(
                {
                    "unet": unet.state_dict(),
                    "text_encoder": text_encoder.state_dict(),
                    "ema_unet": ema_unet.state_dict(),
                    "ema_text": ema_text.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step + 1,
                },
                state_path,
            )
    _save_atomic({"unet": ema_unet.state_dict(), "text_encoder": ema_text.state_dict()}, done)
    return ema_unet.eval(), ema_text.eval()


def scheduler_config(cfg: BuildConfig) -> dict[str, Any]:
    """The shipped scheduler's config: SD 1.5's, with the build's prediction type and terminal SNR."""
    return networks.scheduler_config(cfg.prediction_type, cfg.zero_terminal_snr)


def build(out: Path, work: Path, cfg: BuildConfig, *, resume: bool, log: Log) -> None:
    import shutil

    import torch

    torch.manual_seed(cfg.seed)
    if not resume and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    begin = time.monotonic()
    tokenizer = stage_tokenizer(work, cfg.world_module)
    judge_model = stage_judge(work, cfg, log)
    log(f"tokenizer: {len(tokenizer)} tokens; generating {cfg.images} scenes")
    pixels = _pixels(cfg.world_module, cfg.seed, cfg.images)
    vae = stage_vae(work, cfg, pixels, log)
    latents = stage_latents(work, vae, pixels, log, cfg.device)
    del pixels
    unet, text_encoder = stage_unet(work, cfg, tokenizer, latents, log)
    networks.save_pipeline(
        out, vae.cpu(), latents[2], text_encoder.cpu(), tokenizer, unet.cpu(), scheduler_config(cfg)
    )
    # transformers 5 saves only tokenizer.json; the BPE files keep the folder readable by transformers 4's
    # CLIPTokenizer (and by tinv check) too.
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(work / "tokenizer" / name, out / "tokenizer" / name)
    shutil.copytree(work / "judge", out / "judge", dirs_exist_ok=True)
    del judge_model
    (out / "build.json").write_text(
        json.dumps(
            {
                "config": asdict(cfg),
                "torch": torch.__version__,
                # CPU sums round by thread count, and training amplifies the last bit: bitwise repeats need
                # the same torch, machine and threads.
                "threads": torch.get_num_threads(),
                "seconds_this_run": round(time.monotonic() - begin),
            },
            indent=2,
        )
        + "\n"
    )
    log(f"wrote {out} in {time.monotonic() - begin:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tinv_cli.shapes.build", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the finished pipeline")
    parser.add_argument("--work", type=Path, help="folder for stages and checkpoints (default: OUT.work)")
    parser.add_argument("--resume", action="store_true", help="continue from the work folder's checkpoints")
    parser.add_argument("--world", choices=sorted(WORLDS), default="shapes", help="the world to build on")
    parser.add_argument("--unet-steps", type=int, help="UNet steps (default: the world's)")
    parser.add_argument("--vae-steps", type=int, help="VAE steps (default: the world's)")
    parser.add_argument("--offset-noise", type=float, help="offset noise, in standard deviations (default 0)")
    parser.add_argument(
        "--zero-snr",
        action="store_true",
        help="zero terminal SNR with v-prediction instead of SD 1.5's schedule",
    )
    parser.add_argument("--images", type=int, default=BuildConfig.images)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = {"unet_steps": args.unet_steps, "vae_steps": args.vae_steps, "offset_noise": args.offset_noise}
    if args.zero_snr:
        chosen.update(prediction_type="v_prediction", zero_terminal_snr=True)
    cfg = BuildConfig(
        world=args.world,
        images=args.images,
        device=args.device,
        **{**WORLD_DEFAULTS.get(args.world, {}), **{k: v for k, v in chosen.items() if v is not None}},
    )
    work = args.work or args.out.with_name(args.out.name + ".work")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    build(args.out, work, cfg, resume=args.resume, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
