"""The one training loop every method runs (DreamBooth, LoRA, Textual Inversion, pivotal tuning).

Per step: draw a batch of cached latents (instance photos, plus class images for prior
preservation), add noise at random timesteps, predict it with the UNet, and take the MSE against
the noise (or the velocity for v-prediction models), optionally Min-SNR weighted. Everything random
in step ``s`` comes from a CPU generator seeded by (seed, s), so a resumed run repeats an
uninterrupted one exactly and any device gives the same batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from engine import devices
from engine.jobs import JobCancelled, JobFailed
from engine.protocol import ErrorCode
from engine.protocol.training import fill_prompt
from engine.train import checkpoint, data, methods
from engine.train.runtime import lock_run_folder, make_accelerator, make_optimizer
from engine.words import spell_out


@dataclass
class RunSpec:
    method: str
    token: str
    class_noun: str
    images: list[str]
    run_dir: Path
    config: dict
    class_cache_dir: Path | None = None
    resume: bool = False
    preflight: bool = False


class Trainer:
    def __init__(self, loaded, spec: RunSpec, ctx):
        self.loaded, self.spec, self.ctx = loaded, spec, ctx
        self.config = spec.config
        self.pipe = loaded.pipeline
        self.device = loaded.device
        self.resolution = self.config["resolution"] or loaded.native_resolution
        self.uses_prior = spec.method != "ti" and self.config["prior"] and self.config["class_images"] > 0
        self.instance_prompt = fill_prompt(self.config["instance_prompt"], spec.token, spec.class_noun)
        self.class_prompt = fill_prompt(self.config["class_prompt"], spec.token, spec.class_noun)
        self.history: dict = {"loss": [], "step": 0}
        self.trainables = None
        self.on_trained = None  # called with the trainer after the last step, before exports and restore
        self._lock = None

    # ------------------------------------------------------------------ phases
    def prepare_class_images(self) -> list[str]:
        if not self.uses_prior:
            return []
        cfg = self.config
        root = self.spec.class_cache_dir or (self.spec.run_dir / "class-images")
        folder = data.class_cache_folder(
            root, repr(self.loaded.ref.key), self.class_prompt, self.resolution, cfg["class_image_steps"]
        )
        missing = data.missing_class_seeds(folder, cfg["class_images"])
        if missing and not self.spec.preflight:
            self.ctx.log(f"making {len(missing)} class images for “{self.class_prompt}” (cached for later runs)")
            done = [0]

            def on_image(seed: int) -> None:
                done[0] += 1
                self.ctx.progress(done[0], len(missing), phase="class_images")

            data.make_class_images(
                self.loaded, folder, self.class_prompt, cfg["class_images"], self.resolution,
                cfg["class_image_steps"], on_image,
            )
        self.class_images_missing = len(missing)
        self.class_folder = folder
        return data.class_image_paths(folder, cfg["class_images"])

    def build_caches(self, class_paths: list[str]) -> None:
        cfg, trainables = self.config, self.trainables
        vae = self.pipe.vae
        self.instances = data.encode_latents(vae, data.load_images(self.spec.images, self.resolution), cfg["flip"])
        self.classes = None
        if self.uses_prior and (self.spec.preflight or not cfg["prior_on_latents"]):
            # preflight: the instance photos stand in for class images not made yet (same cost per step)
            paths = self.spec.images if self.spec.preflight else class_paths
            self.classes = data.encode_latents(vae, data.load_images(paths, self.resolution), cfg["flip"])
        elif self.uses_prior:
            self.classes = data.load_class_latents(self.class_folder, len(class_paths), cfg["flip"], vae.device)
        self.scaling = vae.config.scaling_factor
        tok = trainables.tokenizer
        # a multi-vector word is spelled out to all its tokens, as generation will (engine/words.py)
        self.instance_ids = data.tokenize(tok, [spell_out(tok, self.instance_prompt)])
        self.class_ids = data.tokenize(tok, [spell_out(tok, self.class_prompt)])
        if not trainables.trains_text:
            self.cache_prompt_embeddings()

    @torch.no_grad()
    def cache_prompt_embeddings(self) -> None:
        """A frozen text encoder: two embeddings serve the rest of the run."""
        te = self.trainables.text_encoder
        self.instance_embeds = te(self.instance_ids.to(te.device))[0]
        self.class_embeds = te(self.class_ids.to(te.device))[0]

    def word_trains_until(self) -> int | None:
        """Pivotal tuning's pivot: the step after which only the LoRA trains (None: the word trains throughout)."""
        fraction = self.config.get("word_train_fraction", 1.0)
        if self.spec.method != "pivotal" or fraction >= 1.0:
            return None
        return round(self.config["steps"] * fraction)

    def maybe_freeze_word(self, step: int) -> None:
        until = self.word_trains_until()
        if until is not None and step > until and self.trainables.trains_text:
            self.trainables.freeze_word()
            self.cache_prompt_embeddings()

    # ------------------------------------------------------------------ one step
    def compute_loss(self, step: int) -> torch.Tensor:
        from diffusers.training_utils import compute_snr

        cfg, trainables = self.config, self.trainables
        # each data-parallel process draws its own batch; a single process is process 0
        g = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + step + 7919 * self.accelerator.process_index)
        b = cfg["batch"]
        shape = (b, *self.instances.mean.shape[1:])
        index = torch.randint(0, len(self.instances), (b,), generator=g)
        flip = torch.rand(b, generator=g) < 0.5 if cfg["flip"] else None
        scale = 1.0 if cfg["sample_latents"] else 0.0  # draws stay the same either way: resume is exact
        parts = [self.instances.sample(index, flip, scale * torch.randn(shape, generator=g))]
        if self.classes is not None:
            class_index = torch.randint(0, len(self.classes), (b,), generator=g)
            class_flip = torch.rand(b, generator=g) < 0.5 if cfg["flip"] else None
            parts.append(self.classes.sample(class_index, class_flip, scale * torch.randn(shape, generator=g)))
        latents = torch.cat(parts) * self.scaling
        n = latents.shape[0]
        noise = torch.randn(latents.shape, generator=g)
        if cfg["offset_noise"]:
            noise = noise + cfg["offset_noise"] * torch.randn((n, latents.shape[1], 1, 1), generator=g)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (n,), generator=g)
        noise, timesteps = noise.to(latents.device), timesteps.to(latents.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)

        if trainables.trains_text:
            ids = [self.instance_ids] * b + ([self.class_ids] * b if self.classes is not None else [])
            embeds = self.text_forward(torch.cat(ids).to(self.device))[0]
        else:
            embeds = torch.cat(
                [self.instance_embeds.expand(b, -1, -1)]
                + ([self.class_embeds.expand(b, -1, -1)] if self.classes is not None else [])
            )
        unet_dtype = next(trainables.unet.parameters()).dtype
        with self.accelerator.autocast():
            prediction = self.unet_forward(noisy.to(unet_dtype), timesteps, embeds.to(unet_dtype)).sample
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if cfg["min_snr_gamma"]:
            snr = compute_snr(self.noise_scheduler, timesteps)
            clipped = torch.clamp(snr, max=cfg["min_snr_gamma"])
            weight = clipped / (snr + 1) if self.noise_scheduler.config.prediction_type == "v_prediction" else clipped / snr
            per_sample = per_sample * weight
        loss = per_sample[:b].mean()
        if self.classes is not None:
            loss = loss + cfg["prior_weight"] * per_sample[b:].mean()
        return loss

    def numerical_failure(self, step: int, what: str) -> JobFailed:
        """NaN/inf: stop, keep the checkpoints (none holds NaN weights: see save_checkpoint) and name
        the usual causes."""
        last = checkpoint.latest(self.spec.run_dir)
        lr = max(group["lr"] for group in self.optimizer.param_groups)
        half = "half precision (fp16) overflowing, which Apple GPUs (MPS) are prone to: set mixed precision to 'no'"
        too_high = f"a learning rate too high for this method (now {lr:g}): lower it 2-10 times"
        causes = [half, too_high] if self.device.startswith("mps") else [too_high, half]
        then = (f". Then resume from {last.name} (if it fails again at once, start a new run with a lower learning "
                "rate)" if last else ". Then start the run again")
        return JobFailed(
            f"{what} at step {step}; training stopped"
            + (f" and the last good checkpoint ({last.name}) is kept" if last else " before any checkpoint was saved"),
            "likely causes: " + "; or ".join(causes) + then,
            code=ErrorCode.NAN_LOSS,
        )

    def check_finite_weights(self, step: int) -> None:
        """Before weights leave the loop (checkpoint, sample): a NaN checkpoint would poison resume."""
        if not all(bool(torch.isfinite(p).all()) for p in self.trainables.parameters()):
            raise self.numerical_failure(step, "the trained weights became NaN or infinite")

    def train_step(self, step: int) -> float:
        self.maybe_freeze_word(step)  # (again after a resume past the pivot)
        loss = self.compute_loss(step)
        if not torch.isfinite(loss):
            raise self.numerical_failure(step, f"the loss became {loss.item()}")
        self.accelerator.backward(loss)
        if self.config["max_grad_norm"] > 0:
            norm = self.accelerator.clip_grad_norm_(self.trainables.parameters(), self.config["max_grad_norm"])
            # a NaN/inf gradient would write NaN into every weight; fp16's grad scaler skips such steps itself
            if norm is not None and self.accelerator.scaler is None and not torch.isfinite(torch.as_tensor(norm)):
                raise self.numerical_failure(step, f"the gradient became {float(norm)}")
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.trainables.after_step()
        return float(loss.detach().item())

    # ------------------------------------------------------------------ samples
    def sampling_pipeline(self):
        """The base pipeline's VAE with the weights being trained (DDIM, the model's own config)."""
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        t = self.trainables
        pipe = StableDiffusionPipeline(
            vae=self.pipe.vae, text_encoder=t.text_encoder, tokenizer=t.tokenizer, unet=t.unet,
            scheduler=DDIMScheduler.from_config(self.loaded.base_scheduler_config),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @torch.no_grad()
    def sample(self, step: int, prompts: list[str] | None = None, seeds: list[int] | None = None) -> list[dict]:
        from engine.generate import save_png_atomic
        cfg, trainables = self.config, self.trainables
        pipe = self.sampling_pipeline()
        prompts = prompts if prompts is not None else [fill_prompt(p, self.spec.token, self.spec.class_noun) for p in cfg["sample_prompts"]]
        seeds = seeds if seeds is not None else cfg["sample_seeds"]
        was_training = trainables.unet.training
        trainables.unet.eval()
        out = []
        try:
            for p_index, prompt in enumerate(prompts):
                for seed in seeds:
                    with self.accelerator.autocast():
                        image = pipe(
                            prompt, num_inference_steps=cfg["sample_steps"], guidance_scale=7.5,
                            height=self.resolution, width=self.resolution,
                            generator=torch.Generator("cpu").manual_seed(seed),
                        ).images[0]
                    path = self.spec.run_dir / "samples" / f"step-{step:06d}-p{p_index}-s{seed}.png"
                    if not self.spec.preflight:
                        save_png_atomic(image, path, f"{prompt}\nSteps: {cfg['sample_steps']}, Seed: {seed}, Training step: {step}")
                        self.ctx.artifact(str(path), "sample", step=step, prompt=prompt, seed=seed, prompt_index=p_index)
                    out.append({"path": str(path), "step": step, "prompt": prompt, "seed": seed})
        finally:
            trainables.unet.train(was_training)
        return out

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        try:
            return self._run()
        except OSError as exc:
            if not checkpoint.is_disk_full(exc):
                raise
            # samples, the lock file, class images: a full disk is the user's to fix, not a traceback
            last = checkpoint.latest(self.spec.run_dir)
            raise JobFailed(
                f"the disk is full: {exc.filename or 'a file of the run'} could not be written; training stopped"
                + (f" and the last complete checkpoint ({last.name}) is kept" if last else ""),
                f"free some space on the disk holding {self.spec.run_dir}, then "
                + ("resume the run" if last else "start the run again"),
                code=ErrorCode.DISK_FULL,
            ) from None

    def _run(self) -> dict:
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler

        cfg, spec = self.config, self.spec
        started = time.perf_counter()
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator = make_accelerator(cfg, self.device)
        if not spec.preflight and self.accelerator.is_main_process:
            self._lock = lock_run_folder(spec.run_dir)
        from engine import adapters

        # a run that an edit or a gallery put on the model comes off first: class images are the
        # base model's, and training injects its own LoRA into a plain UNet
        adapters.release(self.loaded)
        with self.accelerator.main_process_first():  # one process makes the class images, the rest read them
            class_paths = self.prepare_class_images()
        self.noise_scheduler = DDPMScheduler.from_config(self.loaded.base_scheduler_config)
        try:
            self.trainables = methods.setup(spec.method, self.pipe, cfg, spec.token, spec.class_noun, self.device)
            self.build_caches(class_paths)
            self.optimizer = make_optimizer(cfg, self.trainables.param_groups, self.device)
            # diffusers' schedules; our "constant" holds the rate after the warm-up
            schedule = "constant_with_warmup" if cfg["lr_schedule"] == "constant" else cfg["lr_schedule"]
            self.lr_scheduler = get_scheduler(
                schedule, self.optimizer, num_warmup_steps=cfg["lr_warmup_steps"], num_training_steps=cfg["steps"],
            )
            self.optimizer, self.lr_scheduler = self.accelerator.prepare(self.optimizer, self.lr_scheduler)
            self.trainables.unet.train()
            self.unet_forward, self.text_forward = self.trainables.unet, self.trainables.text_encoder
            if self.accelerator.num_processes > 1:
                # data-parallel under `accelerate launch`: DDP averages the trainable gradients.
                # A single process never wraps the shared UNet (prepare would patch its forward for good).
                self.unet_forward = self.accelerator.prepare_model(self.trainables.unet)
                if self.trainables.trains_text:
                    self.text_forward = self.accelerator.prepare_model(self.trainables.text_encoder)
            if spec.preflight:
                return self.preflight()
            return self.train_loop(started)
        except torch.OutOfMemoryError:
            raise JobFailed(
                f"the {self.device} ran out of memory while training",
                "turn on gradient checkpointing, lower the batch to 1, use 8-bit Adam (CUDA), or train LoRA "
                "instead of a full fine-tune",
                code="out_of_memory",
            ) from None
        finally:
            if self.trainables is not None:
                self.trainables.restore()
            # drop the trained copies (a full fine-tune's float32 UNet) before asking for memory back
            self.trainables = self.optimizer = self.lr_scheduler = None
            self.instances = self.classes = None
            devices.empty_cache(self.device)
            if self._lock is not None:
                self._lock.close()  # releases the flock (data-parallel launches: rank 0 holds it)
                self._lock = None

    def train_loop(self, started: float) -> dict:
        cfg, spec, ctx = self.config, self.spec, self.ctx
        total = cfg["steps"]
        start = 0
        last = checkpoint.latest(spec.run_dir) if spec.resume else None
        if last is not None:
            self.history = checkpoint.load(last, self.trainables, self.optimizer, self.lr_scheduler)
            start = self.history["step"]
            ctx.log(f"resuming from {last.name}")
        elif spec.resume:
            ctx.log("no checkpoint to resume from; starting at step 0")
        main = self.accelerator.is_main_process
        if start == 0 and main:
            self.sample(0)  # the baseline: what the model draws before learning anything
        step = start
        saved_at = start
        pending: list = []
        try:
            for step in range(start + 1, total + 1):
                loss = self.train_step(step)
                self.history["loss"].append([step, round(loss, 6)])
                self.history["step"] = step
                # throttled events carry every loss since the last one, so the curve misses no step
                pending.append([step, round(loss, 6)])
                if ctx.progress(step, total, phase="train", loss=loss, losses=pending,
                                lr=self.lr_scheduler.get_last_lr()[0]):
                    pending = []
                if step % cfg["checkpoint_every"] == 0 or step == total:
                    self.save_checkpoint(step)
                    saved_at = step
                if cfg["sample_every"] and step % cfg["sample_every"] == 0 and step != total and main:
                    self.check_finite_weights(step)
                    self.sample(step)
        except JobCancelled:
            # a cancel (or the app closing) keeps the work done: checkpoint where it stopped
            if step > saved_at and len(self.history["loss"]) and self.history["loss"][-1][0] == step:
                self.save_checkpoint(step)
            raise
        self.accelerator.wait_for_everyone()
        if not main:
            return {"step": total, "process": self.accelerator.process_index}
        samples = self.sample(total)
        if self.on_trained is not None:
            self.on_trained(self)
        from safetensors import SafetensorError

        from engine.train.export import export_run

        try:
            exports = export_run(self, spec.run_dir / "exports")
        except (OSError, SafetensorError) as exc:  # safetensors reports a full disk as its own error
            full = checkpoint.is_disk_full(exc) or "os error 28" in str(exc)
            raise JobFailed(
                f"training finished but writing the exports failed: {'the disk is full' if full else exc}",
                "free disk space, then resume the run: it re-exports from the final checkpoint",
                code=ErrorCode.DISK_FULL if full else "export_failed",
            ) from None
        for item in exports:
            ctx.artifact(item["path"], "export", format=item["format"])
        losses = [v for _, v in self.history["loss"][-20:]]
        return {
            "step": total,
            "final_loss": round(sum(losses) / max(len(losses), 1), 6),
            "exports": exports,
            "samples": [s["path"] for s in samples],
            "seconds": round(time.perf_counter() - started, 2),
        }

    def save_checkpoint(self, step: int) -> None:
        self.accelerator.wait_for_everyone()
        self.check_finite_weights(step)  # on every process: data-parallel copies stop together
        if not self.accelerator.is_main_process:
            return
        try:
            path = checkpoint.save(self.spec.run_dir, step, self.trainables, self.optimizer, self.lr_scheduler,
                                   self.history, keep=self.config["keep_checkpoints"])
        except OSError as exc:
            if not checkpoint.is_disk_full(exc):
                raise
            last = checkpoint.latest(self.spec.run_dir)
            # weights + AdamW's two moments, in float32: what one more checkpoint needs
            need = 3 * sum(p.numel() * 4 for p in self.trainables.parameters())
            raise JobFailed(
                f"the disk is full: checkpoint step-{step:06d} could not be written in "
                f"{checkpoint.checkpoint_dir(self.spec.run_dir)}; training stopped at step {step}"
                + (f" and the last complete checkpoint ({last.name}) is kept" if last else ""),
                f"free at least {max(need / 2**20, 1):.0f} MB on that disk (or delete old runs), then "
                + (f"resume the run: it continues from {last.name}" if last else "start the run again"),
                code=ErrorCode.DISK_FULL,
            ) from None
        self.ctx.artifact(str(path), "checkpoint", step=step)

    def preflight(self) -> dict:
        """Two steps and one sample, timed; nothing is saved. The ETA covers the whole run."""
        cfg = self.config
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        self.train_step(1)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        tick = time.perf_counter()
        self.train_step(2)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        step_s = time.perf_counter() - tick
        tick = time.perf_counter()
        self.sample(0, prompts=[self.instance_prompt], seeds=[0])
        sample_s = time.perf_counter() - tick
        n_samples = len(cfg["sample_prompts"]) * len(cfg["sample_seeds"])
        rounds = 2 + (cfg["steps"] - 1) // cfg["sample_every"] if cfg["sample_every"] else 2
        class_s = getattr(self, "class_images_missing", 0) * sample_s * cfg["class_image_steps"] / cfg["sample_steps"]
        eta = cfg["steps"] * step_s + rounds * n_samples * sample_s + class_s
        peak = devices.peak_memory_bytes(self.device)
        if peak is None and self.device == "cpu":
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the process's peak RSS
        return {
            "preflight": True,
            "seconds_per_step": round(step_s, 4),
            "sample_seconds": round(sample_s, 3),
            "class_images_to_make": getattr(self, "class_images_missing", 0),
            "peak_memory_bytes": peak,
            "eta_seconds": round(eta, 1),
            "steps": cfg["steps"],
            "device": self.device,
            "resolution": self.resolution,
            "instance_prompt": self.instance_prompt,
            "trainable_parameters": sum(p.numel() for p in self.trainables.parameters()),
        }


def run_train_job(params: dict, ctx, state) -> dict:
    loaded = state.model_cache().require()
    spec = RunSpec(
        method=params["method"],
        token=params["token"],
        class_noun=params["class_noun"],
        images=params["images"],
        run_dir=Path(params["run_dir"]),
        config=params["config"],
        class_cache_dir=Path(params["class_cache_dir"]) if params["class_cache_dir"] else None,
        resume=params["resume"],
        preflight=params["preflight"],
    )
    missing = [p for p in spec.images if not Path(p).is_file()]
    if missing or not spec.images:
        raise JobFailed(
            f"{len(missing)} training image(s) missing, e.g. {missing[0]}" if missing else "no training images",
            "add photos to the subject first", code="invalid_params",
        )
    if spec.method in ("ti", "pivotal") and spec.token in loaded.pipeline.tokenizer.get_vocab():
        raise JobFailed(f"{spec.token} is already a word of this model", "choose another token", code="invalid_params")
    return Trainer(loaded, spec, ctx).run()
