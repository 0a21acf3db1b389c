"""What each of the trainer's engineering choices is worth, measured one against the other in one process.

    .venv/bin/python benchmarks/train_changes.py             # writes its section of docs/benchmarks.md
    .venv/bin/python benchmarks/train_changes.py --no-write  # prints only

On the SD 1.5-sized random-weight models of benchmarks/train_speed.py, at 256 px on a CPU (512 px on CUDA), each
row times the diffusers example's way of doing one part of a step beside tinv's, the two alternating so that a
change in the machine's load hits both alike; figures are medians. The parts:

- the UNet and text-encoder forward and backward with convolution weights in the default layout and in
  channels-last (``speed.to_channels_last``), at each precision asked for;
- the latents: the VAE encode and ``latent_dist.sample()`` every step against a draw from the cached mean and std;
- the optimizer: AdamW over the whole 49,409 x 768 token table with the dense gradient and the restore of every
  other row against the fused AdamW over tinv's one new row;
- the data: the example's dataset item (open, resize and flip the image, tokenize a template) against tinv's
  ``SampleStream`` draw and the look-up of the cached ids;
- gradient accumulation: four micro-batches of 1 against one batch of 4 (the same gradient);
- with ``--compile``, the UNet step compiled as the trainer compiles it (``speed.compile_unet``, default layout)
  against the eager step in the same layout (its compile time reported apart).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import train_speed  # noqa: E402  (this folder's other benchmark: the models, the tokenizer, the docs writer)

WARMUP = {"on": True}  # one untimed call of each before the timed rounds (--no-warmup turns it off)


def alternate(
    a: Callable[[], object], b: Callable[[], object], rounds: int, sync: Callable[[], None]
) -> tuple[float, float]:
    """Median seconds of ``a`` and of ``b``, run in turn ``rounds`` times (after one untimed call of each)."""
    times: tuple[list[float], list[float]] = ([], [])
    first = 0 if WARMUP["on"] else 1
    for i in range(first, rounds + 1):
        for j, f in ((0, a), (1, b)) if i % 2 == 0 else ((1, b), (0, a)):
            start = time.perf_counter()
            f()
            sync()
            if i:
                times[j].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


class Bench:
    def __init__(self, precision: str, resolution: int, device: Any, work: Path) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.dtype = getattr(torch, train_speed.DTYPES[precision])
        self.resolution = resolution
        self.work = work
        self.tokenizer = train_speed.clip_sized_tokenizer(work / "tokenizer")
        dtypes = dict.fromkeys(("text_encoder", "unet", "vae"), self.dtype)
        m = train_speed.build_modules(dtypes, torch.device("cpu"))
        self.text_encoder = m["text_encoder"].to(device).requires_grad_(False).train()
        self.unet = m["unet"].to(device).requires_grad_(False)
        self.vae = m["vae"].to(device).requires_grad_(False)
        self.scheduler = m["scheduler"]
        self.text_encoder.get_input_embeddings().register_forward_hook(
            lambda module, inputs, output: output.detach().requires_grad_(True)
        )
        self.autocast = lambda: torch.autocast(
            device.type, dtype=self.dtype, enabled=self.dtype != torch.float32
        )

    def sync(self) -> None:
        train_speed.sync(self.device)

    def model_step(self, batch: int = 1, unet: Any = None) -> Callable[[], None]:
        torch = self.torch
        side = self.resolution // 8
        latents = torch.randn(batch, 4, side, side, device=self.device)
        timesteps = torch.full((batch,), 500, device=self.device)
        ids = self.tokenizer(
            ["a photo of a toy"] * batch, padding="max_length", max_length=77, return_tensors="pt"
        )
        input_ids = ids.input_ids.to(self.device)
        net = unet if unet is not None else self.unet

        def step() -> None:
            with self.autocast():
                noisy = self.scheduler.add_noise(latents, latents, timesteps)
                hidden = self.text_encoder(input_ids)[0]
                pred = net(noisy.to(self.dtype), timesteps, hidden.to(self.dtype)).sample
                loss = torch.nn.functional.mse_loss(pred.float(), latents)
            loss.backward()

        return step

    # --- the rows -------------------------------------------------------------------------------------------

    def channels_last(self, rounds: int) -> tuple[float, float]:
        from tinv_cli.training.speed import to_channels_last

        step = self.model_step()
        undo: list[Callable[[], None]] = []

        def default() -> None:
            while undo:
                undo.pop()()
            step()

        def nhwc() -> None:
            if not undo:
                undo.append(to_channels_last(self.unet))
            step()

        return alternate(default, nhwc, rounds, self.sync)

    def latents(self, rounds: int) -> tuple[float, float]:
        from tinv_cli.training.inversion import encode_latents

        torch = self.torch
        pixels = torch.rand(1, 3, self.resolution, self.resolution) * 2 - 1
        mean, std = encode_latents(self.vae, pixels)
        generator = torch.Generator(device=self.device).manual_seed(0)
        index = torch.zeros(1, dtype=torch.long, device=self.device)

        def example() -> None:
            with torch.no_grad():
                encoded = self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist.sample()
            encoded * self.vae.config.scaling_factor

        def cached() -> None:
            m, s = mean[index, index], std[index, index]
            (
                m + s * torch.randn(m.shape, generator=generator, device=self.device)
            ) * self.vae.config.scaling_factor

        return alternate(example, cached, rounds, self.sync)

    def optimizer(self, rounds: int) -> tuple[float, float]:
        torch = self.torch
        base = self.text_encoder.get_input_embeddings()
        table = torch.nn.Parameter(
            torch.cat([base.weight.detach().float(), base.weight[:1].detach().float()])
        )
        full = torch.optim.AdamW([table], lr=5e-4, weight_decay=1e-2)
        original = table.detach().clone()
        keep = torch.ones(len(table), dtype=torch.bool)
        keep[-1] = False
        ids = torch.randint(0, len(table), (1, 77), device=self.device)
        new = torch.nn.Parameter(torch.zeros(1, table.shape[1], device=self.device))
        fused = torch.optim.AdamW([new], lr=5e-4, weight_decay=1e-2, fused=True)

        def example() -> None:
            # The dense gradient of the embedding look-up, the step over every row, the restore.
            torch.nn.functional.embedding(ids, table).sum().backward()
            full.step()
            full.zero_grad()
            with torch.no_grad():
                table[keep] = original[keep]

        def tinv() -> None:
            new.grad = torch.ones_like(new)
            fused.step()
            fused.zero_grad(set_to_none=True)

        return alternate(example, tinv, rounds, self.sync)

    def data(self, rounds: int) -> tuple[float, float]:
        import numpy as np
        from PIL import Image

        from tinv_cli.training.data import SampleStream
        from tinv_cli.training.templates import OBJECT_TEMPLATES

        torch = self.torch
        image = self.work / "0.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(image)
        dataset = train_speed.ExampleDataset(image, self.tokenizer, self.resolution, "toy")
        stream = SampleStream([len(OBJECT_TEMPLATES)], batch_size=1, flip_p=0.5, seed=0)
        input_ids = torch.zeros(1, len(OBJECT_TEMPLATES), 77, dtype=torch.long, device=self.device)
        side = self.resolution // 8
        latent_mean = torch.zeros(1, 2, 4, side, side, device=self.device)

        def example() -> None:
            item = dataset[0]
            item["pixel_values"].unsqueeze(0).to(self.device), item["input_ids"].unsqueeze(0).to(self.device)

        def tinv() -> None:
            images, flips, prompts = (t.to(self.device, non_blocking=True) for t in stream.next_batch())
            input_ids[images, prompts], latent_mean[images, flips]

        return alternate(example, tinv, rounds * 20, self.sync)

    def accumulation(self, rounds: int) -> tuple[float, float]:
        one, four = self.model_step(1), self.model_step(4)

        def accumulate() -> None:
            for _ in range(4):
                one()

        return alternate(accumulate, four, rounds, self.sync)

    def compiled(self, rounds: int) -> tuple[float, float, float]:
        from tinv_cli.training import speed

        # As the trainer compiles: the UNet in the default layout, with speed.COMPILE_OPTIONS.
        speed.to_contiguous(self.unet)
        plain, fast = self.model_step(), self.model_step(unet=speed.compile_unet(self.unet))
        start = time.perf_counter()
        fast()
        self.sync()
        compile_s = time.perf_counter() - start
        a, b = alternate(plain, fast, rounds, self.sync)
        return a, b, compile_s


ROWS = (
    ("channels_last", "UNet + text encoder step, default layout vs channels-last"),
    ("latents", "latents: VAE encode every step vs draw from the cached mean and std"),
    ("optimizer", "optimizer: AdamW over the 49,409-row table + restore vs fused AdamW over the new row"),
    ("data", "data: the example's dataset item vs SampleStream draw + cached ids"),
    ("accumulation", "4 micro-batches of 1 accumulated vs one batch of 4"),
)


def run(args: argparse.Namespace, log: Callable[[str], None]) -> list[tuple[str, str, float, float]]:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows: list[tuple[str, str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precisions:
            bench = Bench(precision, args.resolution, device, Path(tmp))
            for key, label in ROWS:
                if key not in args.rows:
                    continue
                if key != "channels_last":
                    # Every other row runs once, at the first precision, in tinv's layout.
                    if precision != args.precisions[0]:
                        continue
                    from tinv_cli.training.speed import to_channels_last

                    to_channels_last(bench.unet, bench.vae)
                a, b = getattr(bench, key)(args.rounds)
                rows.append((precision, label, a, b))
                log(f"{precision} {label}: {a * 1000:.1f} ms vs {b * 1000:.1f} ms ({a / b:.2f}x)")
            if args.compile:
                a, b, compile_s = bench.compiled(args.rounds)
                rows.append(
                    (
                        precision,
                        f"UNet step eager vs compiled, default layout (compiling took {compile_s:.0f} s)",
                        a,
                        b,
                    )
                )
                log(f"{precision} compile: {a * 1000:.1f} ms vs {b * 1000:.1f} ms, compile {compile_s:.0f} s")
            del bench
    return rows


def header(args: argparse.Namespace) -> str:
    return "\n".join(
        [
            "## What each change is worth (`benchmarks/train_changes.py`)",
            "",
            "Each row times the example's way of doing one part of a step beside tinv's, the two alternating in one",
            f"process, on the SD 1.5-sized random-weight models at {args.resolution} px, batch 1 (medians; the data",
            "row repeats 20 times as often). Rows other than the layout one run in tinv's layout (channels-last).",
            "Each precision's block comes from one run; a later run replaces only its own precisions.",
        ]
    )


def block(
    args: argparse.Namespace, precision: str, rows: list[tuple[str, str, float, float]], command: str
) -> str:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    warmup = "no warm-up" if args.no_warmup else "one untimed call of each first"
    lines = [
        f"<!-- train_changes:{precision}:start -->",
        f"### {precision}, {args.resolution} px, {args.rounds} rounds, {warmup}",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {train_speed.machine(device)}",
        "",
        "| part of the step | example's way (ms) | tinv's way (ms) | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for _, label, a, b in rows:
        speedup = f"{a / b:,.0f}x" if a / b >= 100 else f"{a / b:.2f}x"
        lines.append(f"| {label} | {a * 1000:,.1f} | {b * 1000:,.1f} | {speedup} |")
    lines += ["", f"Measured {time.strftime('%Y-%m-%d')}.", f"<!-- train_changes:{precision}:end -->"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precisions", help="comma-separated; default fp32 on a CPU, fp16,bf16 on CUDA")
    parser.add_argument("--resolution", type=int, help="default 256 on a CPU, 512 on CUDA")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--rows", default=",".join(key for key, _ in ROWS), help="which rows, comma-separated"
    )
    parser.add_argument("--no-warmup", action="store_true", help="no untimed call before the timed rounds")
    parser.add_argument("--compile", action="store_true", help="add the torch.compile row (slow to compile)")
    parser.add_argument("--no-write", action="store_true", help="print the table without updating the docs")
    args = parser.parse_args()

    import torch

    cuda = torch.cuda.is_available()
    args.resolution = args.resolution or (512 if cuda else 256)
    args.precisions = (args.precisions or ("fp16,bf16" if cuda else "fp32")).split(",")
    args.rows = args.rows.split(",")
    WARMUP["on"] = not args.no_warmup
    rows = run(args, lambda line: print(line, flush=True))
    command = "python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]])
    blocks = {
        precision: block(args, precision, [row for row in rows if row[0] == precision], command)
        for precision in args.precisions
    }
    if args.no_write:
        print("\n\n".join(blocks.values()))
    else:
        print(
            train_speed.write_blocks(ROOT / "docs" / "benchmarks.md", "train_changes", header(args), blocks)
        )


if __name__ == "__main__":
    main()
