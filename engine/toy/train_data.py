"""The toy-world training data: scenes rendered once (in parallel) with captions, 16×16 object masks
and the caption positions of each object's colour and shape words; plus marked scenes for the VAE."""

from __future__ import annotations

import logging
import math
import os
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from engine.toy import world
from engine.toy.model import IMAGE_SIZE

log = logging.getLogger("s2s.toy.train")


def _render_marked_chunk(args) -> np.ndarray:
    start, count, seed = args
    return np.stack([world.render(world.sample_marked_scene(np.random.default_rng([seed, 1, i])), IMAGE_SIZE)[0]
                     for i in range(start, start + count)])


def _render_chunk(args) -> tuple:
    start, count, seed = args
    images, captions, backgrounds, masks16, token_words = [], [], [], [], []
    for i in range(start, start + count):
        rng = np.random.default_rng([seed, i])
        scene = world.sample_scene(rng)
        image, masks = world.render(scene, IMAGE_SIZE)
        images.append(image)
        captions.append(scene.caption)
        backgrounds.append(scene.background)
        m16 = np.zeros((2, 16, 16), np.float32)
        words = np.full((2, 2), -1, np.int16)  # per object: word index of its colour, its shape
        caption_words = scene.caption.split()
        cursor = 0
        for k, (obj, mask) in enumerate(zip(scene.objects, masks, strict=True)):
            m16[k] = mask.reshape(16, 4, 16, 4).mean(axis=(1, 3))
            for j in range(cursor, len(caption_words) - 1):
                if caption_words[j] == obj.colour and caption_words[j + 1] == obj.shape:
                    words[k] = (j, j + 1)
                    cursor = j + 2
                    break
        masks16.append(m16)
        token_words.append(words)
    return np.stack(images), captions, np.stack(masks16), np.stack(token_words), backgrounds


def build_dataset(n: int, seed: int, workers: int | None = None, marked: bool = False) -> dict:
    workers = workers or max(1, min(16, os.cpu_count() or 1))
    chunk = max(1, math.ceil(n / (workers * 4)))
    jobs = [(s, min(chunk, n - s), seed) for s in range(0, n, chunk)]
    with Pool(workers) as pool:
        parts = pool.map(_render_chunk, jobs)
        marked_parts = pool.map(_render_marked_chunk, jobs) if marked else []
    return {
        "images": np.concatenate([p[0] for p in parts]),
        "captions": [c for p in parts for c in p[1]],
        "masks16": np.concatenate([p[2] for p in parts]),
        "words": np.concatenate([p[3] for p in parts]),
        "backgrounds": [b for p in parts for b in p[4]],
        "marked_images": np.concatenate(marked_parts) if marked else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
    }


def load_or_build_dataset(work_dir: Path, config) -> dict:
    """The training set for ``config`` (a ToyTrainConfig), rendered once and cached in ``work_dir``."""
    marked = config.vae_steps > 0 and config.vae_marked_share > 0
    path = work_dir / f"dataset-v2-{config.seed}-{config.n_scenes}{'-marked' if marked else ''}.npz"
    if path.exists():
        data = np.load(path, allow_pickle=False)
        return {k: (list(data[k]) if k in ("captions", "backgrounds") else data[k]) for k in data.files}
    started = time.perf_counter()
    data = build_dataset(config.n_scenes, config.seed, marked=marked)
    np.savez(path, images=data["images"], captions=np.array(data["captions"]), masks16=data["masks16"], words=data["words"],
             backgrounds=np.array(data["backgrounds"]), marked_images=data["marked_images"])
    log.info("rendered %d scenes in %.1fs", config.n_scenes, time.perf_counter() - started)
    return data
