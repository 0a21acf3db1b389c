"""Validation grids made beside training, not in its way.

A grid of validation images costs as much as many training steps (25 denoising steps per image, then the VAE
decode). On a GPU, ``Validator`` makes it in a worker thread while training goes on: the training thread encodes
the prompt with the current vectors (one text-encoder pass between two steps, so the worker never reads vectors
the optimizer is changing) and goes back to training; the worker denoises with the UNet, which is frozen and so
safe to share (grad mode, autocast and the CUDA stream are the worker's own), decodes with the VAE, which
training no longer uses once the latents are cached, and writes the PNG. One grid is made at a time, in order.
On a CPU the grid is made in the training thread: a second thread would only share the same cores.

Finished grids are handed back to the training thread (``finished``, ``wait``), so callbacks never run in the
worker, and an error in the worker is raised there.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli.training import inversion, metrics

if TYPE_CHECKING:
    import torch


def in_background(device: torch.device) -> bool:
    """Whether validation grids are made in a worker thread on ``device``: on GPUs, not on CPUs."""
    return device.type == "cuda"


class Validator:
    """Makes the run's validation grids, ``folder/step-NNNNN.png``, in the background where that helps."""

    def __init__(
        self,
        parts: inversion.Parts,
        tokenizers: tuple[Any, ...],
        *,
        folder: Path,
        count: int,
        seed: int,
        resolution: int,
        background: bool,
    ) -> None:
        self.parts = parts
        self.tokenizers = tokenizers
        self.folder = folder
        self.count, self.seed, self.resolution = count, seed, resolution
        self.pending: list[tuple[int, Future[Path]]] = []
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="tinv-validation") if background else None

    def submit(self, step: int, prompt: str) -> None:
        """Start the grid of ``prompt`` (already expanded) with the vectors as they are now."""
        out = self.folder / f"step-{step:05d}.png"
        future: Future[Path]
        if self.worker is None:
            images = inversion.validation_images(
                self.parts,
                self.tokenizers,
                prompt,
                count=self.count,
                seed=self.seed,
                resolution=self.resolution,
            )
            future = Future()
            future.set_result(metrics.save_png(metrics.image_grid(images), out))
        else:
            future = self.worker.submit(self._render, self._encode(prompt), out)
        self.pending.append((step, future))

    def finished(self) -> list[tuple[int, Path]]:
        """``(step, grid)`` of every grid finished since the last call, in order; a failed one raises here."""
        done = []
        while self.pending and self.pending[0][1].done():
            step, future = self.pending.pop(0)
            done.append((step, future.result()))
        return done

    def wait(self) -> list[tuple[int, Path]]:
        """Wait for every grid started, then hand them back as ``finished`` does."""
        for _, future in self.pending:
            future.exception()
        return self.finished()

    def close(self) -> None:
        """Let a grid being made finish (it uses the modules cleanup hands back); drop any still queued."""
        if self.worker is not None:
            self.worker.shutdown(wait=True, cancel_futures=True)

    # --- the two halves of a background grid ----------------------------------------------------------------

    def _pipeline(self) -> Any:
        pipe = inversion.validation_pipeline(self.parts, self.tokenizers)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _autocast(self) -> Any:
        import torch

        unet = self.parts.unet
        # Half-precision modules meet the fp32 new rows: autocast, as in training, settles every op's dtype.
        half = unet.dtype in (torch.float16, torch.bfloat16)
        return torch.autocast(unet.device.type, dtype=unet.dtype, enabled=half)

    def _encode(self, prompt: str) -> dict[str, Any]:
        """In the training thread: the prompt's embeddings (and the pooled ones of a family that has them), with
        classifier-free guidance's unconditional half, exactly as the pipeline would compute them itself."""
        import torch

        device = self.parts.unet.device
        encoders = self.parts.text_encoders
        modes = [(m, m.training) for m in encoders]
        try:
            with torch.no_grad(), self._autocast():
                for module, _ in modes:
                    module.eval()
                embeds = self._pipeline().encode_prompt(
                    prompt=prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=True
                )
        finally:
            for module, mode in modes:
                module.train(mode)
        tensors = dict(zip(self.parts.family.prompt_embeds, embeds, strict=True))
        if device.type == "cuda":
            # The worker's stream must not start before these are computed on this one.
            ready = torch.cuda.Event()
            ready.record()
            return {"tensors": tensors, "ready": ready}
        return {"tensors": tensors, "ready": None}

    def _render(self, encoded: dict[str, Any], out: Path) -> Path:
        """In the worker thread: denoise, decode, write the grid."""
        import torch

        parts = self.parts
        device, vae_device = parts.unet.device, parts.vae.device
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        on_stream = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        with on_stream, torch.no_grad(), self._autocast():
            if stream is not None:
                stream.wait_event(encoded["ready"])
                for tensor in encoded["tensors"].values():
                    tensor.record_stream(stream)
            parts.vae.to(device)
            try:
                images = self._pipeline()(
                    **encoded["tensors"],
                    num_images_per_prompt=self.count,
                    num_inference_steps=inversion.VALIDATION_INFERENCE_STEPS,
                    generator=torch.Generator(device=device).manual_seed(self.seed),
                    height=self.resolution,
                    width=self.resolution,
                ).images
            finally:
                parts.vae.to(vae_device)
        return metrics.save_png(metrics.image_grid(images), out)
