"""An SD-1.5-shaped pipeline with random weights: real FLOPs and memory, nothing downloaded.

Configs are SD 1.5's published architecture (UNet 860M, VAE 84M, CLIP ViT-L/14 text encoder 123M).
The tokenizer is the byte-level one of the tiny model: prompts are padded to 77 tokens either way,
so the compute is the same as with CLIP's real vocabulary.
"""

from __future__ import annotations


def build_sd15_shaped_pipeline(seed: int = 0):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from engine.models.tiny import (
        assemble_pipeline,
        load_tokenizer,
        sd_v1_scheduler,
        write_byte_level_tokenizer,
    )

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=512,
            eos_token_id=513,
            pad_token_id=513,
        )
    )
    tokenizer = load_tokenizer(write_byte_level_tokenizer)
    return assemble_pipeline(vae, text_encoder, tokenizer, unet, sd_v1_scheduler())
