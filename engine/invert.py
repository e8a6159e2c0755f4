"""Turning a picture back into the noise that makes it, so Prompt-to-Prompt can edit any photo.

    ddim      DDIM inversion with the source prompt; editing then samples with guidance, which
              drifts from the picture as guidance grows (the baseline).
    npi       negative-prompt inversion: DDIM inversion, then the source prompt is also the
              "unconditional" prompt, so guidance cancels on the source branch (no optimisation).
    nulltext  null-text inversion: per step, the unconditional embedding is optimised so the guided
              sampler retraces the inversion (Mokady et al.; ~10 optimiser steps per step: slow).
    direct    direct inversion: DDIM inversion, then at every step the source branch is put back on
              the inverted trajectory (Ju et al.), so it reconstructs exactly and the target branch
              sees the source's true attention. The default.

The inversion step itself is written here (diffusers' DDIMInverseScheduler pairs timesteps
differently from DDIMScheduler's sampling, and direct inversion needs the two to mirror exactly).
engine.edit caches the results per ``inversion_key`` so moving a slider never re-inverts.
"""

from __future__ import annotations

import hashlib

import torch

NULLTEXT_INNER_STEPS = 10
NULLTEXT_EARLY_STOP = 1e-5


def alpha_at(scheduler, timestep: int) -> torch.Tensor:
    return scheduler.alphas_cumprod[timestep] if timestep >= 0 else scheduler.final_alpha_cumprod


def previous_timestep(scheduler, timestep: int) -> int:
    return int(timestep) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps


@torch.no_grad()
def ddim_trajectory(unet, scheduler, latent0: torch.Tensor, cond: torch.Tensor, progress=None) -> list[torch.Tensor]:
    """DDIM inversion with the conditional prompt only: latents[k] is the latent before sampling
    step N-k (latents[0] is the clean latent, latents[N] the starting noise)."""
    timesteps = scheduler.timesteps  # descending, as sampling visits them
    latents = [latent0]
    z = latent0
    for k, t in enumerate(reversed(timesteps)):
        t = int(t)
        eps = unet(z, t, encoder_hidden_states=cond).sample
        a_from, a_to = alpha_at(scheduler, previous_timestep(scheduler, t)), alpha_at(scheduler, t)
        x0 = (z - (1 - a_from).sqrt() * eps) / a_from.sqrt()
        z = a_to.sqrt() * x0 + (1 - a_to).sqrt() * eps
        latents.append(z)
        if progress is not None:
            progress(k + 1, len(timesteps))
    return latents


def null_text_embeddings(unet, scheduler, trajectory, cond, uncond, guidance: float, progress=None, cancelled=None):
    """One optimised unconditional embedding per sampling step (Mokady et al. 2022)."""
    timesteps = scheduler.timesteps
    n = len(timesteps)
    z = trajectory[-1]
    embeddings = []
    uncond = uncond.detach().clone()
    for i, t in enumerate(timesteps):
        t = int(t)
        goal = trajectory[n - i - 1]
        with torch.no_grad():
            eps_cond = unet(z, t, encoder_hidden_states=cond).sample
        uncond = uncond.detach().clone().requires_grad_(True)
        optimiser = torch.optim.Adam([uncond], lr=1e-2 * (1.0 - i / 100.0))
        with torch.enable_grad():
            for _ in range(NULLTEXT_INNER_STEPS):
                eps_uncond = unet(z, t, encoder_hidden_states=uncond).sample
                eps = eps_uncond + guidance * (eps_cond - eps_uncond)
                loss = torch.nn.functional.mse_loss(scheduler.step(eps, t, z).prev_sample, goal)
                # grad w.r.t. the embedding only: the UNet's weights stay untouched and gradient-free
                (uncond.grad,) = torch.autograd.grad(loss, [uncond])
                optimiser.step()
                if loss.item() < NULLTEXT_EARLY_STOP + i * 2e-5:
                    break
        uncond = uncond.detach()
        embeddings.append(uncond)
        with torch.no_grad():
            eps_uncond = unet(z, t, encoder_hidden_states=uncond).sample
            z = scheduler.step(eps_uncond + guidance * (eps_cond - eps_uncond), t, z).prev_sample
        if progress is not None:
            progress(i + 1, n)
        if cancelled is not None:
            cancelled()
    return embeddings


def inversion_key(image_bytes: bytes, *parts) -> tuple:
    """What an inversion depends on: the pixels (hashed) and everything in ``parts``."""
    return (hashlib.sha256(image_bytes).hexdigest(), *parts)
