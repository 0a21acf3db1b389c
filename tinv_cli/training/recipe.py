"""``tinv train``: Textual Inversion, the diffusers example's math with the waste taken out.

Read ``train`` from top to bottom: setup -> train -> save_checkpoint -> register -> cleanup. What differs from
examples/textual_inversion/textual_inversion.py, and why:

- Only the new rows train. The text encoder's token-embedding module is swapped, for the run, for one that
  holds the frozen base ``nn.Embedding`` plus an fp32 ``[n, d]`` parameter for the placeholder ids. The
  optimizer sees only that parameter, so there is no gradient, Adam state, weight decay or per-step restore
  over the 49k-row vocabulary, and every other row stays bit-identical by construction.
- Latents are cached. Each image and its mirror go through the VAE once; the latent distribution's mean and
  std stay on the device and a latent is drawn from them each step (exactly what ``latent_dist.sample()``
  does), so the VAE leaves the device for the whole run.
- Every random draw comes from a dedicated generator (data order, flips and prompts in ``data.SampleStream``;
  latent samples, noise and timesteps in ``_Recipe.noise``), whose states go into the checkpoint: a resumed run is
  bitwise the same run on CPU.
- The loss is read back from the device every ``LOSS_EVERY`` steps, not every step, so the host never waits
  on the accelerator in the hot loop.
- Data parallelism is accelerate's: under ``accelerate launch`` or ``torchrun`` each process trains on its own
  share of every batch and the new rows' gradient (n x d numbers) is averaged across processes before each
  optimizer step, so every process holds the same vectors; the end of the run checks that they do.

Feedback goes through a ``TrainCallbacks`` object; nothing here prints.

Longer than 450 lines because the recipe is meant to be read top to bottom as one script, in the order it runs;
the parts that stand on their own live beside it: ``trainable.py`` (the model prepared for training),
``resume.py`` (run identity and the state a checkpoint holds), ``request.py``, ``process.py``, ``validation.py``.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinv_cli import compat
from tinv_cli.errors import TinvError
from tinv_cli.families import describe_widths
from tinv_cli.training import checkpoint, loss_terms, resume, speed
from tinv_cli.training.process import RunLock, StepRate, Stopped, StopSignal, cpu_processes, peak_memory
from tinv_cli.training.request import (
    StartInfo,
    TrainCallbacks,
    TrainingInterrupted,
    TrainRequest,
    TrainSummary,
    check_report_to,
    resolve_concept,
    run_dir_for,
)

if TYPE_CHECKING:
    import torch

    from tinv_cli.models.single_file import SingleFile
    from tinv_cli.registry.entry import Entry
    from tinv_cli.registry.store import Registry
    from tinv_cli.training.early_stop import EarlyStop
    from tinv_cli.training.inversion import Parts
    from tinv_cli.training.validation import Validator

LOSS_EVERY = 10  # steps between reading the loss back from the device (a host sync)
TRACKER_DIR = "tensorboard"  # inside the run folder


# ---------------------------------------------------------------------------------------------------------------
# The run. Setup checks everything that can be refused before a model is loaded.


def train(
    request: TrainRequest,
    callbacks: TrainCallbacks | None = None,
    *,
    registry: Registry | None = None,
    pipeline: Any | None = None,
) -> TrainSummary:
    """Train ``request.concept``, checkpointing as it goes, and register the result.

    Resumes from the run's checkpoint when its settings match. SIGINT/SIGTERM are handled for the whole call:
    during set-up they stop it at once (``TrainingInterrupted``, nothing saved, any checkpoint as it was);
    during training the run saves a checkpoint and raises ``TrainingInterrupted``; after the last step the
    run is complete, so it is saved and registered and the summary says a stop was asked for. Refuses
    (``TinvError``) while another process trains the same concept. ``pipeline``: train on a pipeline already
    in memory instead of loading the base model; its modules are used as they are and handed back unchanged
    (same modules, weights, devices and modes).
    """
    from tinv_cli.registry.store import Registry
    from tinv_cli.training import memory

    recipe = _Recipe(request, callbacks or TrainCallbacks(), registry if registry is not None else Registry())
    with StopSignal() as stop:
        try:
            try:
                with stop.immediately():
                    recipe.setup(pipeline)
            except Stopped:
                raise recipe.interrupted_in_setup(stop) from None
            recipe.train(stop)
            return recipe.finish(stop)
        finally:
            recipe.cleanup()
            # A model the run loaded goes with the recipe; the allocator's pages then go back to the system.
            del recipe
            memory.release_memory()


class _Recipe:
    """One run's state. Methods appear in the order they run: setup, train, save_checkpoint, finish, cleanup."""

    def __init__(self, request: TrainRequest, callbacks: TrainCallbacks, registry: Registry) -> None:
        self.request = request
        self.registry = registry
        self.callbacks = callbacks
        self.started = time.perf_counter()
        self.undo: list[Callable[[], object]] = []  # cleanup runs these last-in first-out
        self.step = 0
        self.checkpoint_step = -1
        self.last_loss: float | None = None
        self.wall_before = 0.0
        self.validations: list[Path] = []
        self.validator: Validator | None = None
        self.it_s: float | None = None
        self.lock: RunLock | None = None
        self.saved: checkpoint.CheckpointInfo | None = None  # the checkpoint this run resumes from

    # --- setup --------------------------------------------------------------------------------------------

    def setup(self, pipeline: Any | None) -> None:
        self.saved = self._setup_run()
        self._setup_model(pipeline)
        self._setup_optimizer()
        self._setup_state(self.saved)

    def interrupted_in_setup(self, stop: StopSignal) -> TrainingInterrupted:
        """The error for a stop signal during set-up, which saves nothing: whatever checkpoint there was stays."""
        name = self.request.concept
        if self.saved is not None:
            return TrainingInterrupted(
                f"{stop.name}: interrupted before training resumed; the checkpoint at step "
                f"{self.saved.step}/{self.saved.total_steps} in {self.run_dir} is as it was",
                f"run `tinv train {name}` to resume",
            )
        return TrainingInterrupted(
            f"{stop.name}: interrupted before training started; nothing to resume",
            f"run `tinv train {name}` to start again",
        )

    def _setup_run(self) -> checkpoint.CheckpointInfo | None:
        """Settings, images, processes and the resume decision: everything refusable, before any model."""
        from accelerate import Accelerator
        from accelerate.state import PartialState

        from tinv_cli.training.data import load_training_set

        request = self.request
        concept, config = resolve_concept(request.project, request.concept, request.overrides)
        self.base = request.base or request.project.model.base
        self.revision = (
            request.revision if request.base else request.revision or request.project.model.revision
        )
        # How a single-file checkpoint is read follows the base it belongs to, as the revision does.
        own = request.project.model
        self.model_config = request.model_config if request.base else request.model_config or own.config
        self.prediction = request.prediction or ("auto" if request.base else own.prediction)
        # A checkpoint file is named (or refused) from its header, before anything else is done.
        self.single_file = self._open_checkpoint()
        self.start_entry = self.registry.get(request.from_entry) if request.from_entry else None
        if self.start_entry is not None:
            from tinv_cli.models.configs import model_widths_from_config

            # An entry of another model family is refused before any weights load, when the model's config
            # files are on this machine (loading checks again against the weights).
            widths = model_widths_from_config(
                self.base, self.revision, config=self.model_config, prediction=self.prediction
            )
            if widths is not None:
                self._check_start_fits(widths)
        check_report_to(request.report_to)

        # The process group (under torchrun or accelerate launch) comes up here; only rank 0 reports.
        cpu = cpu_processes()
        state = PartialState(cpu=cpu)
        self.run_dir = run_dir_for(concept.name)
        if state.is_main_process:
            # Before anything reads or writes the run folder: one run per concept at a time (RunLock).
            self.lock = RunLock(self.run_dir, concept.name)
            self.lock.acquire()
            checkpoint.sweep(self.run_dir)  # what killed runs left half-written; nothing live writes here now
        else:
            self.callbacks = TrainCallbacks()
        say = self.callbacks.on_message
        if self.single_file is not None:
            say(self.single_file.detail)
        if self.start_entry is not None and self.start_entry.num_vectors != concept.vectors:
            start = self.start_entry
            if "vectors" in request.overrides:
                raise TinvError(
                    f"--vectors {concept.vectors} does not fit --from {start.ref}, which has {start.num_vectors}",
                    "leave out --vectors: a run from an entry trains the entry's vectors",
                )
            say(f"{start.ref} has {start.num_vectors} vectors; training that many")
            concept = replace(concept, vectors=start.num_vectors)
        self.images = load_training_set(
            concept.images,
            resolution=config.resolution,
            center_crop=config.center_crop,
            warn=say,
            masks=config.masked_loss,
        )
        if config.mixed_precision == "fp16" and state.device.type == "cpu":
            say("fp16 mixed precision needs a GPU; training on the CPU in full precision")
            config = replace(config, mixed_precision="no")
        if config.mixed_precision == "bf16" and state.device.type == "cpu" and not speed.cpu_has_bf16():
            say(
                "this CPU has no bf16 instructions, so bf16 arithmetic is emulated and runs many times slower "
                "than full precision here; --mixed-precision no trains faster (with twice the memory)"
            )
        self.concept, self.config = concept, config

        # accelerate keeps one state per process and refuses a second Accelerator with another precision; a
        # second run in one process (a notebook, the test suite) is legitimate, so its state starts afresh.
        compat.reset_accelerate_state()
        self.accelerator = Accelerator(
            cpu=cpu,
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation,
            log_with=request.report_to,
            project_dir=str(self.run_dir),
        )
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.device = self.accelerator.device
        self.main = self.accelerator.is_main_process

        self.settings = resume.run_settings(
            self.base, self.revision, concept, config, self.start_entry, self.images.paths, self.world
        )
        if self.single_file is not None:
            # Another prediction type or architecture over the same file is another run.
            self.settings["checkpoint"] = {
                "config": self.model_config,
                "prediction": self.single_file.prediction,
            }
        return checkpoint.resumable(self.run_dir, self.settings, name=concept.name, restart=request.restart)

    def _open_checkpoint(self) -> SingleFile | None:
        from tinv_cli.models.single_file import open_single_file, single_file_path

        path = single_file_path(self.base)
        if path is None:
            return None
        return open_single_file(path, config=self.model_config, prediction=self.prediction)

    def _checkpoint_provenance(self) -> dict[str, Any] | None:
        """Which checkpoint file exactly, for the entry: its sha256 and A1111's short hash."""
        if self.single_file is None:
            return None
        from tinv_cli.models.model_hash import file_sha256, short_hash

        sha = file_sha256(self.single_file.path)
        return {
            "sha256": sha,
            "hash": short_hash(sha),
            "config": self.model_config,
            "prediction": self.single_file.prediction,
            "kind": self.single_file.label.split(": ", 1)[1],
        }

    def _setup_model(self, pipeline: Any | None) -> None:
        """Load the model, then attach the trainable concept to it (``trainable.attach``)."""
        import torch

        from tinv_cli.training import inversion, memory, trainable

        config = self.config
        dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.mixed_precision]
        from tinv_cli.models.loading import load_pipeline

        loaded = pipeline
        if loaded is None:
            # A diffusers folder loads as its files are (mapped, nothing read yet) and attach casts one
            # tensor at a time: loading in the training dtype would read every fp32 file whole before casting.
            # A single file goes through diffusers' key conversion, which copies anyway.
            loaded = load_pipeline(
                self.base,
                revision=self.revision,
                torch_dtype=dtype if self.single_file is not None else None,
                config=self.model_config,
                prediction=self.prediction,
            )
        parts = inversion.load_parts(self.base, self.revision, dtype, loaded)
        # The pipeline object (its feature extractor, image encoder ...) goes: Parts has what training uses.
        del loaded
        self.noise_scheduler = parts.family.noise_scheduler(parts.scheduler.config)
        objective = parts.family.objective(self.noise_scheduler)
        widths = tuple(int(e.get_input_embeddings().weight.shape[1]) for e in parts.text_encoders)
        self.model_label = f"{describe_widths(widths)}, {objective}"
        self._note_resolution(parts)
        self.model = trainable.attach(
            parts,
            self.concept,
            config,
            self.images,
            self.device,
            self._initial_vectors,
            caller_pipeline=pipeline is not None,
            undo=self.undo,
            dtype=dtype,
        )
        del parts  # attach's own (without what it freed) is the run's
        self.parts, self.trainable = self.model.parts, self.model.trainable
        memory.release_memory()  # what loading and attach freed, back to the system once

    def _initial_vectors(
        self, tables: list[torch.Tensor], tokenizers: tuple[Any, ...], encoders: tuple[Any, ...]
    ) -> list[torch.Tensor]:
        """Starting vectors per text encoder: the --from entry's, else the concept's initializer (its rows or
        the encoder's output for it; or random or zero rows, each encoder from a random stream of its own)."""
        from tinv_cli.training import inversion

        if self.start_entry is not None:
            start = self.start_entry.embedding()
            self._check_start_fits(tuple(int(table.shape[1]) for table in tables))
            return list(start.vectors)
        return [
            inversion.initial_vectors(
                table,
                self.concept,
                tokenizer,
                seed=self.config.seed,
                stream="init" if i == 0 else f"init/{i}",
                text_encoder=encoder,
            )
            for i, (table, tokenizer, encoder) in enumerate(zip(tables, tokenizers, encoders, strict=True))
        ]

    def _check_start_fits(self, widths: tuple[int, ...]) -> None:
        """Refuses --from an entry trained for another model family, naming both families."""
        from tinv_cli.errors import ModelError
        from tinv_cli.sampling.loader import check_fits

        start = self.start_entry
        if start is None:
            return
        try:
            check_fits(start.embedding(), widths)
        except ModelError as e:
            raise ModelError(
                f"--from {start.ref}: {e.message}",
                "train from an entry made for this model's family, or without --from",
            ) from None

    def _note_resolution(self, parts: Parts) -> None:
        """Says so when training below the size the model generates (SD 2.x 768 px, SDXL 1024 px)."""
        native = parts.family.native_resolution(parts.unet.config, parts.vae.config)
        if self.config.resolution < native:
            self.callbacks.on_message(
                f"{self.base} makes {native} px images and this run trains at {self.config.resolution} px; "
                f"set resolution = {native} (or --resolution {native}) to train at the model's own size"
            )

    def _setup_optimizer(self) -> None:
        """AdamW and the learning-rate schedule over the new rows, and nothing else."""
        import torch
        from diffusers.optimization import get_scheduler

        config = self.config
        scale = config.batch_size * config.gradient_accumulation * self.world if config.scale_lr else 1
        self.learning_rate = config.learning_rate * scale
        optimizer = torch.optim.AdamW(
            self.trainable,
            lr=self.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.adam_weight_decay,
            eps=config.adam_epsilon,
            fused=True if speed.fused_adamw(self.device) else None,
        )
        # Stepped once per optimizer step by this loop, so no scaling by the process count as in the example.
        self.lr_scheduler = get_scheduler(
            config.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=config.lr_warmup_steps,
            num_training_steps=config.steps,
            num_cycles=config.lr_num_cycles,
        )
        self.optimizer = self.accelerator.prepare(optimizer)

    def _setup_state(self, saved: checkpoint.CheckpointInfo | None) -> None:
        """The random streams, then either the checkpoint's state or a fresh run folder."""
        import torch
        from accelerate.utils import set_seed

        from tinv_cli.training import metrics
        from tinv_cli.training.data import SampleStream, derive_seed

        config = self.config
        # Every process has read the run folder (in _setup_run) before rank 0 may clear it below.
        self.accelerator.wait_for_everyone()
        set_seed(derive_seed(config.seed, "global", self.rank) % 2**32)
        self.stream = SampleStream(
            [len(p) for p in self.model.prompts],
            batch_size=config.batch_size,
            flip_p=config.flip_p,
            seed=config.seed,
            rank=self.rank,
            world_size=self.world,
        )
        self.noise = torch.Generator(device=self.device).manual_seed(
            derive_seed(config.seed, "noise", self.rank)
        )
        self.loss_sum = torch.zeros((), device=self.device)
        self.loss_count = 0
        # Names this run in the entry it registers, so a rerun after a kill finds that entry (finish).
        self.run_id = saved.run_id if saved is not None and saved.run_id else uuid.uuid4().hex
        self.early: EarlyStop | None = None
        if config.early_stop_every:
            from tinv_cli.training.early_stop import EarlyStop

            self.early = EarlyStop(
                every=config.early_stop_every,
                patience=config.early_stop_patience,
                seed=config.seed,
                latent_mean=self.model.latent_mean,
                latent_std=self.model.latent_std,
                scaling_factor=self.model.scaling_factor,
                num_timesteps=self.noise_scheduler.config.num_train_timesteps,
                batch=config.batch_size,
            )
        if saved is not None:
            saved_state = checkpoint.load_state(saved.path)
            if self.early is not None and saved_state.get("early_stop") is not None:
                self.early.load_state_dict(saved_state["early_stop"])
            restored = resume.restore(
                saved_state,
                self.rank,
                self.trainable,
                self.optimizer,
                self.lr_scheduler,
                self.accelerator.scaler,
                self.stream,
                self.noise,
                self.loss_sum,
            )
            self.loss_count = restored.loss_count
            self.step = self.checkpoint_step = saved.step
            self.wall_before = saved.wall_time_s
            self.last_loss = restored.last_loss
            # A resumed run keeps the way of stepping it started with, so it stays the same run to the bit.
            self.batched = restored.batched
            if self.main:
                metrics.truncate_metrics(self.run_dir / metrics.METRICS_FILE, saved.step)
            self.callbacks.on_message(
                f"Resuming {self.concept.name} from its checkpoint at step {saved.step}/{saved.total_steps}"
            )
        elif self.main:
            self._fresh_run_folder()
        if saved is None:
            self.batched = self._fits_batched()
        self.accelerator.gradient_accumulation_steps = 1 if self.batched else config.gradient_accumulation
        if self.batched:
            self.callbacks.on_message(
                f"each step's {config.gradient_accumulation} micro-batches of {config.batch_size} run as one "
                f"batch of {config.gradient_accumulation * config.batch_size}: the same gradient, faster, and "
                "they fit in memory"
            )
        self.first_step = self.step
        if self.request.report_to:
            scalars = {k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool))}
            self.accelerator.init_trackers(TRACKER_DIR, config=scalars)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.callbacks.on_start(
            StartInfo(
                name=self.concept.name,
                token=self.concept.token,
                run_dir=self.run_dir,
                start_step=self.step,
                total_steps=config.steps,
                images=len(self.images),
                device=str(self.device),
                num_processes=self.world,
                mixed_precision=config.mixed_precision,
                learning_rate=self.learning_rate,
                model=self.model_label,
            )
        )

    def _fresh_run_folder(self) -> None:
        """A new run starts from an empty run folder (the registry keeps every earlier result)."""
        import shutil

        from tinv_cli.training import metrics

        checkpoint.discard(self.run_dir)
        for name in (metrics.METRICS_FILE, metrics.LOSS_PLOT):
            (self.run_dir / name).unlink(missing_ok=True)
        for folder in ("validation", TRACKER_DIR):
            shutil.rmtree(self.run_dir / folder, ignore_errors=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)

    # --- train --------------------------------------------------------------------------------------------

    def train(self, stop: StopSignal) -> None:
        import torch

        config, accelerator = self.config, self.accelerator
        rate = StepRate()
        # Batched micro-steps: one pass takes all of an optimizer step's micro-batches, drawn in the same order.
        groups = config.gradient_accumulation if self.batched else 1
        while self.step < config.steps and not (self.early is not None and self.early.stopped):
            draws = [self.stream.next_batch() for _ in range(groups)]
            images, flips, prompts = (
                draws[0] if groups == 1 else (torch.cat(d) for d in zip(*draws, strict=True))
            )
            with accelerator.accumulate():
                loss = self._micro_step(images, flips, prompts, groups)
            self.loss_sum += loss.detach()  # stays on the device: no sync
            self.loss_count += 1
            if not accelerator.sync_gradients:
                continue
            self.step += 1
            step, self.it_s = self.step, rate.tick()
            loss_value = self._read_loss() if step % LOSS_EVERY == 0 or step == config.steps else None
            self.callbacks.on_step(step, loss_value, self._lr(), self.it_s)
            self._report_validations()
            if self.early is not None and self.early.due(step):
                self._evaluate_early_stop()
                if self.early.stopped:
                    break
            if step == config.steps:
                break
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                self.save_checkpoint()
            if (
                self.concept.validation_prompt
                and config.validation_every
                and step % config.validation_every == 0
            ):
                self.validate()
            if self._stop_requested(stop):
                self.save_checkpoint()
                raise TrainingInterrupted(
                    f"interrupted at step {step}/{config.steps}; checkpoint saved in {self.run_dir}",
                    f"run `tinv train {self.concept.name}` to resume",
                )

    def _micro_step(
        self, images: torch.Tensor, flips: torch.Tensor, prompts: torch.Tensor, groups: int = 1
    ) -> torch.Tensor:
        """One micro-batch, or (``groups`` > 1) an optimizer step's ``groups`` micro-batches in one pass."""
        import torch

        accelerator, device, trainable = self.accelerator, self.device, self.trainable
        images, flips, prompts = (t.to(device, non_blocking=True) for t in (images, flips, prompts))
        mean, std = self.model.latent_mean[images, flips], self.model.latent_std[images, flips]
        # The order of these draws is part of the run's identity: latent sample, noise, timesteps, micro-batch
        # after micro-batch, so batched and accumulated micro-steps see the same numbers.
        samples, noises, steps = [], [], []
        for part in mean.chunk(groups):
            samples.append(torch.randn(part.shape, generator=self.noise, device=device))
            noises.append(torch.randn(part.shape, generator=self.noise, device=device))
            steps.append(
                torch.randint(
                    0,
                    self.noise_scheduler.config.num_train_timesteps,
                    (len(part),),
                    generator=self.noise,
                    device=device,
                )
            )
        latents = (mean + std * torch.cat(samples)) * self.model.scaling_factor
        noise, timesteps = torch.cat(noises), torch.cat(steps)
        loss = self._loss(self.model.train_unet, images, flips, prompts, latents, noise, timesteps)
        if self.config.norm == "regularise":
            loss = loss + loss_terms.norm_penalty(trainable, self.model.vocab_norms, self.config.norm_weight)
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            if self.world > 1:
                # The step's only communication: n x d numbers per text encoder, after which every process
                # takes the same step.
                for new in trainable:
                    grad = new.grad
                    assert grad is not None  # backward has run on every trainable row
                    grad.copy_(accelerator.reduce(grad, reduction="mean"))
            if self.config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(trainable, self.config.max_grad_norm)
        self.optimizer.step()
        if self.config.norm == "keep" and accelerator.sync_gradients:
            loss_terms.keep_norm(trainable, self.model.vocab_norms)
        if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
            self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def _loss(
        self,
        unet: Any,
        images: torch.Tensor,
        flips: torch.Tensor,
        prompts: torch.Tensor,
        latents: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
    ) -> torch.Tensor:
        from tinv_cli.training.inversion import diffusion_loss

        mask = self.model.latent_mask
        with self.accelerator.autocast():
            return diffusion_loss(
                unet,
                self.parts.family,
                self.parts.text_encoders,
                self.noise_scheduler,
                latents,
                noise,
                timesteps,
                [ids[images, prompts] for ids in self.model.input_ids],
                {name: tensor[images, flips] for name, tensor in self.model.extras.items()},
                min_snr_gamma=self.config.min_snr_gamma,
                mask=None if mask is None else mask[images, flips],
            )

    def _evaluate_early_stop(self) -> None:
        """The validation loss of the vectors now, on the eager UNet; says so when the run stops early."""
        early = self.early
        assert early is not None  # only called when early stopping is on

        def loss(*batch: torch.Tensor) -> torch.Tensor:
            return self._loss(self.parts.unet, *batch)

        early.evaluate(self.step, loss, self.trainable)  # its history goes into the entry (finish)
        if early.stopped:
            self.callbacks.on_message(
                f"stopping early at step {self.step}/{self.config.steps}: no better validation loss in "
                f"{early.patience} evaluations; keeping the vectors of step {early.best_step}"
            )

    def _fits_batched(self) -> bool:
        """Whether an optimizer step's micro-batches fit in memory as one batch (``speed.batch_micro_steps``),
        from the activations of one micro-batch on fixed inputs (no random stream moves)."""
        import torch

        config, device = self.config, self.device
        if config.gradient_accumulation == 1:
            return False
        zeros = torch.zeros(config.batch_size, dtype=torch.long, device=device)
        latents = torch.zeros((config.batch_size, *self.model.latent_mean.shape[2:]), device=device)
        modules = (self.parts.unet, *self.parts.text_encoders)
        resident = [p for module in modules for p in module.parameters()]
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            micro_bytes = speed.activation_bytes(
                # The eager UNet: measuring must not compile it for a batch size training does not use.
                lambda: self._loss(self.parts.unet, zeros, zeros, zeros, latents, latents, zeros),
                resident,
            )
        fits = speed.batch_micro_steps(config.gradient_accumulation, micro_bytes, device)
        if self.world > 1:  # every process takes the same kind of step
            flag = torch.tensor(float(fits), device=device)
            fits = bool(self.accelerator.reduce(flag, reduction="sum") == self.world)
        return fits

    def _lr(self) -> float:
        return float(self.lr_scheduler.get_last_lr()[0])

    def _read_loss(self) -> float | None:
        """The mean loss since the last read (this is the host sync), logged to metrics.jsonl and trackers."""
        import math

        from tinv_cli.training import metrics

        if self.loss_count == 0:
            return None
        mean = self.loss_sum / self.loss_count
        if self.world > 1:
            mean = self.accelerator.reduce(mean, reduction="mean")
        value = float(mean)
        self.loss_sum.zero_()
        self.loss_count = 0
        if not math.isfinite(value):
            raise TinvError(
                f"the loss became {value} by step {self.step}; the vectors are no longer usable",
                "lower --lr or use --mixed-precision bf16 or no, and start over with --restart",
            )
        self.last_loss = value
        if self.main:
            it_s = None if self.it_s is None else round(self.it_s, 3)
            record = {"step": self.step, "loss": value, "lr": self._lr(), "it_s": it_s}
            metrics.append_metrics(self.run_dir / metrics.METRICS_FILE, [record])
        if self.request.report_to:
            self.accelerator.log({"loss": value, "lr": self._lr()}, step=self.step)
        return value

    def _stop_requested(self, stop: StopSignal) -> bool:
        if self.world == 1:
            return stop.received is not None
        # All processes must stop at the same step; agreeing costs a collective, so they ask only now and then.
        if self.step % LOSS_EVERY:
            return False
        import torch

        flag = torch.tensor(float(stop.received is not None), device=self.device)
        return bool(self.accelerator.reduce(flag, reduction="sum") > 0)

    def validate(self) -> None:
        """Start a fixed-seed image grid for the validation prompt, made by the modules being trained; on a GPU
        it is made beside the next training steps (validation.py)."""
        from tinv_cli.embedding import Embedding
        from tinv_cli.sampling.loader import expand_prompt
        from tinv_cli.training.validation import Validator, in_background

        if self.main:
            concept = self.concept
            if self.validator is None:
                self.validator = Validator(
                    self.parts,
                    self.model.tokenizers,
                    folder=self.run_dir / "validation",
                    count=self.config.num_validation_images,
                    seed=self.config.seed,
                    resolution=self.config.resolution,
                    background=in_background(self.device),
                )
            current = Embedding(concept.token, tuple(new.detach().cpu() for new in self.trainable))
            self.validator.submit(self.step, expand_prompt(concept.validation_prompt or "", [current]))
            self._report_validations()
        self.accelerator.wait_for_everyone()

    def _report_validations(self, wait: bool = False) -> None:
        """Report the grids finished so far (all of them with ``wait``), from the training thread."""
        if self.validator is None:
            return
        for step, path in self.validator.wait() if wait else self.validator.finished():
            self.validations.append(path)
            self.callbacks.on_validation(step, path)

    # --- save_checkpoint ----------------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        """Save everything the next step depends on; every process's RNG states go into rank 0's file."""
        from accelerate.utils import gather_object

        from tinv_cli.training import metrics

        if self.checkpoint_step == self.step:
            return
        # The loss window is saved as it is, not read (which would end it): the logged means then depend on
        # the step alone, whatever checkpoint_every is, and a resumed run logs the same ones.
        rng = resume.rng_state(self.stream, self.noise, self.loss_sum, self.loss_count)
        every_rng = gather_object([rng]) if self.world > 1 else [rng]
        if self.main:
            state = resume.state(
                self.trainable,
                self.optimizer,
                self.lr_scheduler,
                self.accelerator.scaler,
                every_rng,
                last_loss=self.last_loss,
                batched=self.batched,
                early_stop=None if self.early is None else self.early.state_dict(),
            )
            meta = {
                "step": self.step,
                "total_steps": self.config.steps,
                "settings_hash": checkpoint.settings_hash(self.settings),
                "settings": self.settings,
                "finished": False,
                "entry": None,
                "wall_time_s": self._wall_time(),
                "project": str(self.request.project.path),
                "run_id": self.run_id,
                "base_model_file": self._checkpoint_provenance(),
            }
            path = checkpoint.save(self.run_dir, state, meta)
            records = metrics.read_metrics(self.run_dir / metrics.METRICS_FILE)
            metrics.draw_loss_curve(
                records, self.run_dir / metrics.LOSS_PLOT, title=f"{self.concept.name}: loss"
            )
            self.callbacks.on_checkpoint(self.step, path)
        self.checkpoint_step = self.step
        self.accelerator.wait_for_everyone()

    def _wall_time(self) -> float:
        return round(self.wall_before + time.perf_counter() - self.started, 3)

    # --- finish: register the result ----------------------------------------------------------------------

    def finish(self, stop: StopSignal) -> TrainSummary:
        from accelerate.utils import broadcast_object_list, gather_object

        from tinv_cli.embedding import Embedding
        from tinv_cli.training import metrics

        self.save_checkpoint()  # so a failure while registering resumes here, with nothing left to train
        if self.early is not None:
            self.early.use_best(self.trainable)  # the checkpoint above keeps the last ones, to resume from
        if self.concept.validation_prompt:
            self.validate()
            self._report_validations(wait=True)
        grid = self.validations[-1] if self.concept.validation_prompt and self.validations else None
        vectors = tuple(new.detach().float().cpu().clone() for new in self.trainable)
        self.model.restore_rows()
        digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in vectors)).hexdigest()
        rank_sha256 = tuple(gather_object([digest])) if self.world > 1 else (digest,)
        if len(set(rank_sha256)) != 1:
            raise TinvError(
                f"the {self.world} processes ended with different vectors; nothing was registered",
                "this is a bug in tinv's data-parallel training; please report it",
            )
        concept, config = self.concept, self.config
        ref = [""]
        if self.main:
            training = {
                "config": config.to_dict(),
                "seed": config.seed,
                "steps": config.steps,
                "final_loss": None if self.last_loss is None else round(self.last_loss, 6),
                "wall_time_s": round(self._wall_time(), 1),
                "images": len(self.images),
                "initializer": self.settings["initializer"],
                "init": self.settings["init"],
                "from_entry": self.start_entry.ref if self.start_entry else None,
                "vectors": concept.vectors,
                "mixed_precision": config.mixed_precision,
                "effective_learning_rate": self.learning_rate,  # after --scale-lr
                "num_processes": self.world,
                "device": self.device.type,
                "run_id": self.run_id,
                "base_model_file": self._checkpoint_provenance(),
            }
            if self.early is not None:
                training["early_stop"] = self.early.summary()
            # Registering and marking the checkpoint finished are two writes; a kill between them leaves an
            # unfinished checkpoint at the last step, whose rerun lands here again and must not add a second
            # version: the entry carrying this run's id is the one it made.
            entry = self._registered()
            if entry is None:
                entry = self.registry.add(
                    concept.name,
                    Embedding(concept.token, vectors),
                    kind=concept.kind,
                    source={"type": "trained", "run": str(self.run_dir)},
                    images=self.images.paths,
                    base_model=self.base,
                    base_model_revision=self.revision,
                    training=training,
                    extra_files={"validation.png": grid} if grid else None,
                )
            else:
                self.callbacks.on_message(
                    f"{entry.ref} was registered by this run before it was stopped; nothing added"
                )
            checkpoint.update_meta(self.run_dir, finished=True, entry=entry.ref)
            ref = [entry.ref]
            if stop.received is not None:
                self.callbacks.on_message(
                    f"{stop.name} after the last step: the run was complete, so it was saved and registered "
                    f"as {entry.ref}; nothing to resume"
                )
        if self.world > 1:
            broadcast_object_list(ref)
        if self.request.report_to:
            self.accelerator.end_training()
        summary = TrainSummary(
            entry=ref[0],
            name=concept.name,
            token=concept.token,
            steps=config.steps,
            start_step=self.first_step,
            final_loss=self.last_loss,
            wall_time_s=self._wall_time(),
            peak_memory_bytes=peak_memory(self.device),
            run_dir=self.run_dir,
            checkpoint=self.run_dir / checkpoint.CHECKPOINT_DIR,
            metrics=self.run_dir / metrics.METRICS_FILE,
            loss_plot=self.run_dir / metrics.LOSS_PLOT,
            validation=tuple(self.validations),
            device=str(self.device),
            num_processes=self.world,
            mixed_precision=config.mixed_precision,
            rank_sha256=rank_sha256,
            main_process=self.main,
        )
        self.callbacks.on_end(summary)
        return summary

    def _registered(self) -> Entry | None:
        """The version of this concept that this run registered already, if any."""
        return next(
            (e for e in self.registry.versions(self.concept.name) if _run_id(e) == self.run_id),
            None,
        )

    # --- cleanup ------------------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Hand the modules back as they came: embedding module, devices, modes, requires_grad; then the run
        folder's lock."""
        try:
            if self.validator is not None:
                self.validator.close()  # first: a grid being made still uses the modules
            while self.undo:
                self.undo.pop()()
        finally:
            if self.lock is not None:
                self.lock.release()


def _run_id(entry: Entry) -> object:
    training = entry.info.get("training")
    return training.get("run_id") if isinstance(training, dict) else None
