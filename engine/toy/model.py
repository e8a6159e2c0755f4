"""The toy-world model's architecture: Stable Diffusion's classes at a size a CPU can train.

64×64 px images ↔ 16×16×4 latents (AutoencoderKL, factor 4); a UNet2DConditionModel with
cross-attention at 16×16 and 8×8; a CLIP text encoder (hidden 64, 3 layers) over a byte-level BPE
tokenizer whose merges make every word of the world one token (and leave room for new tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.models.tiny import load_tokenizer, sd_v1_scheduler, write_byte_level_tokenizer
from engine.toy.world import vocabulary

IMAGE_SIZE = 64
TEXT_DIM = 64
VOCAB_SIZE = 1024  # tokenizer uses ~600; the rest is room for learned tokens (<sks-dog> style)


def word_merges(words: list[str]) -> list[tuple[str, str]]:
    """Learn BPE merges on the vocabulary until every word is one ``word</w>`` symbol.

    The standard BPE learning loop (merge the most frequent adjacent pair everywhere, record it),
    run to completion; ties break alphabetically so the result is deterministic. Written here
    because the tokenizers library's trainer needs a corpus file and cannot be forced to finish
    every word.
    """
    corpus = [tuple(word[:-1]) + (word[-1] + "</w>",) for word in sorted(set(words))]
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for symbols in corpus:
            for pair in zip(symbols, symbols[1:], strict=False):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        merged = []
        for symbols in corpus:
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged.append(tuple(out))
        corpus = merged


def write_toy_tokenizer(folder: Path) -> None:
    write_byte_level_tokenizer(folder, merges=word_merges(vocabulary()))


@dataclass
class ToyModelConfig:
    unet_channels: tuple[int, ...] = (64, 128)
    vae_channels: tuple[int, ...] = (32, 64, 64)
    text_layers: int = 3
    text_heads: int = 4


def build_components(config: ToyModelConfig | None = None, seed: int = 0):
    """Fresh (untrained) vae, unet, text_encoder, tokenizer, scheduler."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    config = config or ToyModelConfig()
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(write_toy_tokenizer)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(config.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(config.vae_channels),
        block_out_channels=config.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=IMAGE_SIZE,
        mid_block_add_attention=False,
    )
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 4,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=config.unet_channels,
        down_block_types=("CrossAttnDownBlock2D",) * len(config.unet_channels),
        up_block_types=("CrossAttnUpBlock2D",) * len(config.unet_channels),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=16,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=TEXT_DIM,
            intermediate_size=TEXT_DIM * 4,
            num_hidden_layers=config.text_layers,
            num_attention_heads=config.text_heads,
            max_position_embeddings=77,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        )
    )
    return vae, unet, text_encoder, tokenizer, sd_v1_scheduler()
