"""Every export of a finished run reloads through diffusers and matches what was trained.

One short real run per method on the tiny SD-1-shaped model (2 steps, 2 class images, 64 px);
while the trained weights are still live, a wrapper around ``export_run`` records the reference
(UNet output on fixed inputs, the new word's embedding, the DreamBooth UNet's state) that every
reloaded file must reproduce.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

TOKEN = "<dotty-star>"
SLUG = "dotty-star"
TOL = 1e-4
# LoRA/pivotal train fast and at alpha != rank, so a file that lost the scale (or the LoRA) fails
OVERRIDES = {
    "lora": dict(learning_rate=1e-2, rank=4, alpha=2.0),
    "pivotal": dict(learning_rate=1e-2, embedding_learning_rate=1e-2, rank=4, alpha=2.0),
    "ti": dict(embedding_learning_rate=1e-2),
    "dreambooth": {},
    # LoRA on every layer kind: the convolutions' LoRA is a Conv2d pair, which both formats must carry
    "lora-all": dict(learning_rate=1e-2, rank=4, alpha=2.0, lora_layers="all"),
    # a multi-vector word: one vector per piece of the identifier, starting as those pieces
    "pivotal-spelled": dict(learning_rate=1e-2, embedding_learning_rate=1e-2, rank=4, alpha=2.0,
                            init_word="{token}", word_vectors=0),
}


def _encode(tokenizer, text_encoder, prompt: str) -> torch.Tensor:
    from engine.words import spell_out

    ids = tokenizer([spell_out(tokenizer, prompt)], padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids)[0]


def _inputs():
    g = torch.Generator().manual_seed(7)
    return torch.randn((1, 4, 8, 8), generator=g), torch.tensor([500])


@torch.no_grad()
def _unet_out(unet, embeds: torch.Tensor) -> torch.Tensor:
    latents, t = _inputs()
    return unet(latents, t, embeds).sample


def _run(key: str, model_dir: Path, images: list[str], run_dir: Path) -> dict:
    import engine.train.export as export_module
    from engine.jobs import Job, JobContext
    from engine.models.registry import ModelCache, resolve_source
    from engine.protocol import validate_job
    from engine.protocol.training import preset
    from engine.train.loop import RunSpec, Trainer

    cache = ModelCache()
    cache.load(resolve_source({"source": str(model_dir)}), "cpu")
    loaded = cache.current
    method = key.split("-")[0]
    config = preset(method, len(images), "cpu")
    config.update(steps=2, batch=1, class_images=2, class_image_steps=2, sample_every=0, sample_steps=2,
                  sample_seeds=[0], sample_prompts=["a photo of {token}"], **OVERRIDES[key])
    params = validate_job("train", dict(method=method, token=TOKEN, class_noun="star", images=images,
                                        run_dir=str(run_dir), config=config))
    spec = RunSpec(method=method, token=TOKEN, class_noun="star", images=images, run_dir=run_dir,
                   config=params["config"])
    events: list[dict] = []
    trainer = Trainer(loaded, spec, JobContext(Job("train", params), events.append))
    base_before = {k: v.clone() for k, v in loaded.pipeline.unet.state_dict().items()}
    ref: dict = {}
    real_export = export_module.export_run

    def export_and_record(tr, folder):
        # the trained model as it is when exported (for LoRA: still injected into the base UNet)
        tables = tr.trainables
        with torch.no_grad():
            ref["embeds"] = _encode(tables.tokenizer, tables.text_encoder, tr.instance_prompt)
        ref["unet_out"] = _unet_out(tables.unet, ref["embeds"])
        if tables.token_ids:
            ref["embedding"] = tables.text_encoder.get_input_embeddings().weight[tables.token_ids].detach().clone()
        if method == "dreambooth":
            ref["unet_state"] = {k: v.detach().clone() for k, v in tables.unet.state_dict().items()}
        return real_export(tr, folder)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export_module, "export_run", export_and_record)
        result = trainer.run()
    return dict(result=result, ref=ref, loaded=loaded, trainer=trainer, base_before=base_before, events=events,
                files={e["format"]: Path(e["path"]) for e in result["exports"]}, folder=run_dir / "exports")


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """trained(method) → that method's run (each trained once per module)."""
    tmp = tmp_path_factory.mktemp("train_exports")
    images = []
    for i in range(4):  # four distinct 64-px "photos"
        path = tmp / f"photo-{i}.png"
        Image.new("RGB", (64, 64), (60 * i, 120, 200 - 40 * i)).save(path)
        images.append(str(path))
    runs: dict = {}

    def get(method: str) -> dict:
        if method not in runs:
            runs[method] = _run(method, tiny_model_dir, images, tmp / f"run-{method}")
        return runs[method]

    # One thread: the tiny model's ops are too small to share, and OpenMP's barriers stall when
    # another process holds a core (measured on 2 cores: 1.9 s per UNet forward at 2 threads, 16 ms at 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield get
    torch.set_num_threads(threads)


def _fresh_pipe(model_dir: Path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(model_dir), local_files_only=True, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _embedding_row(pipe, token: str) -> torch.Tensor:
    token_id = pipe.tokenizer.convert_tokens_to_ids(token)
    return pipe.text_encoder.get_input_embeddings().weight[token_id]


# ------------------------------------------------------------------------------------------ LoRA
@pytest.mark.parametrize("key", ["lora", "lora-all"])
def test_lora_exports_reload_to_the_trained_unet(trained, tiny_model_dir, key):
    run = trained(key)
    files, ref = run["files"], run["ref"]
    assert set(files) == {"diffusers_lora", "kohya_lora", "run_config", "model_card"}
    assert files["diffusers_lora"].name == "pytorch_lora_weights.safetensors"
    assert files["kohya_lora"].name == f"{SLUG}-kohya.safetensors"

    base = _fresh_pipe(tiny_model_dir)
    base_out = _unet_out(base.unet, ref["embeds"])
    assert (base_out - ref["unet_out"]).abs().max() > 50 * TOL  # the check below can tell LoRA from none

    for source in (run["folder"], files["kohya_lora"]):  # folder: diffusers' default file name
        pipe = _fresh_pipe(tiny_model_dir)
        pipe.load_lora_weights(str(source))
        out = _unet_out(pipe.unet, ref["embeds"])
        torch.testing.assert_close(out, ref["unet_out"], atol=TOL, rtol=0, msg=lambda m, s=source: f"{s.name}: {m}")


def test_kohya_file_layout_and_metadata(trained):
    from safetensors import safe_open

    run = trained("lora")
    with safe_open(str(run["files"]["kohya_lora"]), "pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    pattern = re.compile(r"lora_unet_[a-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)")
    assert all(pattern.fullmatch(k) for k in tensors), sorted(tensors)[:5]
    modules = {k.split(".")[0] for k in tensors}
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0" in modules
    for module in modules:
        down, up = tensors[f"{module}.lora_down.weight"], tensors[f"{module}.lora_up.weight"]
        assert down.shape[0] == up.shape[1] == 4
        assert tensors[f"{module}.alpha"].ndim == 0 and tensors[f"{module}.alpha"].item() == 2.0
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["ss_network_dim"] == "4" and float(meta["ss_network_alpha"]) == 2.0
    assert meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_output_name"] == f"{SLUG}-kohya"
    assert meta["ss_steps"] == "2" and float(meta["ss_learning_rate"]) == 1e-2
    assert meta["ss_resolution"] == "(64, 64)"
    assert TOKEN in meta["ss_training_comment"]
    assert "ss_network_args" not in meta  # attention only: plain LoRA, no LoCon args


def test_kohya_file_of_lora_on_convolutions_carries_conv_keys_and_locon_args(trained):
    from safetensors import safe_open

    run = trained("lora-all")
    with safe_open(str(run["files"]["kohya_lora"]), "pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    down, up = tensors[f"{conv}.lora_down.weight"], tensors[f"{conv}.lora_up.weight"]
    # kohya's LoCon layout: down is a rank-channel conv with the layer's 3×3 kernel, up a 1×1 conv
    assert down.ndim == 4 and down.shape[0] == 4 and down.shape[2:] == (3, 3)
    assert up.ndim == 4 and up.shape[1:] == (4, 1, 1)
    assert "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_2.lora_down.weight" in tensors
    assert "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight" in tensors
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "2.0", "lora_layers": "all"}


def test_training_left_the_base_unet_bitwise_unchanged(trained):
    from peft.tuners.lora import LoraLayer

    for method in ("lora", "pivotal"):
        run = trained(method)
        unet = run["loaded"].pipeline.unet
        assert not any(isinstance(m, LoraLayer) for m in unet.modules()), method
        after = unet.state_dict()
        assert after.keys() == run["base_before"].keys(), method
        for key, value in run["base_before"].items():
            assert torch.equal(after[key], value), f"{method}: {key} changed"


# ---------------------------------------------------------------------------- Textual Inversion
def test_ti_embeddings_reload_to_the_trained_row(trained, tiny_model_dir):
    run = trained("ti")
    files, ref = run["files"], run["ref"]
    assert set(files) == {"a1111_embedding", "diffusers_embedding", "run_config", "model_card"}
    from safetensors.torch import load_file

    a1111 = load_file(str(files["a1111_embedding"]))
    assert list(a1111) == ["emb_params"] and a1111["emb_params"].shape == (1, 32)
    assert list(load_file(str(files["diffusers_embedding"]))) == [TOKEN]

    for path in (files["a1111_embedding"], files["diffusers_embedding"]):
        pipe = _fresh_pipe(tiny_model_dir)
        pipe.load_textual_inversion(str(path), token=TOKEN)
        assert torch.equal(_embedding_row(pipe, TOKEN), ref["embedding"][0]), path.name
        with torch.no_grad():
            embeds = _encode(pipe.tokenizer, pipe.text_encoder, run["trainer"].instance_prompt)
        torch.testing.assert_close(embeds, ref["embeds"], atol=1e-5, rtol=0)
    assert not torch.equal(_embedding_row(_fresh_pipe(tiny_model_dir), "star</w>"), ref["embedding"][0])


# -------------------------------------------------------------------------------------- pivotal
def test_pivotal_embedding_plus_lora_reproduce_the_trained_model(trained, tiny_model_dir):
    run = trained("pivotal")
    files, ref = run["files"], run["ref"]
    assert set(files) == {"diffusers_lora", "kohya_lora", "a1111_embedding", "diffusers_embedding",
                          "run_config", "model_card"}
    prompt = run["trainer"].instance_prompt
    pairs = ((files["a1111_embedding"], run["folder"]), (files["diffusers_embedding"], files["kohya_lora"]))
    for embedding, lora in pairs:
        pipe = _fresh_pipe(tiny_model_dir)
        pipe.load_textual_inversion(str(embedding), token=TOKEN)
        pipe.load_lora_weights(str(lora))
        assert torch.equal(_embedding_row(pipe, TOKEN), ref["embedding"][0])
        with torch.no_grad():
            embeds = _encode(pipe.tokenizer, pipe.text_encoder, prompt)
        torch.testing.assert_close(embeds, ref["embeds"], atol=1e-5, rtol=0)
        out = _unet_out(pipe.unet, embeds)
        where = f"{embedding.name} + {lora.name}"
        torch.testing.assert_close(out, ref["unet_out"], atol=TOL, rtol=0, msg=lambda m, w=where: f"{w}: {m}")


def test_multi_vector_word_reloads_and_is_spelled_out_as_diffusers_does(trained, tiny_model_dir):
    from safetensors.torch import load_file

    from engine.words import tokens_of_word, vector_tokens

    run = trained("pivotal-spelled")
    files, ref = run["files"], run["ref"]
    pieces = _fresh_pipe(tiny_model_dir).tokenizer(TOKEN, add_special_tokens=False).input_ids
    n = len(pieces)
    assert n > 1 and ref["embedding"].shape == (n, 32)
    assert load_file(str(files["a1111_embedding"]))["emb_params"].shape == (n, 32)
    assert load_file(str(files["diffusers_embedding"]))[TOKEN].shape == (n, 32)
    assert "| Word vectors |" in files["model_card"].read_text()
    assert json.loads(files["run_config"].read_text())["word_vectors"] == n
    prompt = run["trainer"].instance_prompt
    for embedding, lora in ((files["a1111_embedding"], run["folder"]), (files["diffusers_embedding"], files["kohya_lora"])):
        pipe = _fresh_pipe(tiny_model_dir)
        pipe.load_textual_inversion(str(embedding), token=TOKEN)
        pipe.load_lora_weights(str(lora))
        assert tokens_of_word(pipe.tokenizer, TOKEN) == vector_tokens(TOKEN, n)
        with torch.no_grad():  # diffusers spells the word out itself here: training must have done the same
            embeds = pipe.encode_prompt(prompt, "cpu", 1, False)[0]
        torch.testing.assert_close(embeds, ref["embeds"], atol=1e-5, rtol=0)
        torch.testing.assert_close(_unet_out(pipe.unet, embeds), ref["unet_out"], atol=TOL, rtol=0)


# ----------------------------------------------------------------------------------- DreamBooth
def test_dreambooth_folder_and_single_file_hold_the_trained_unet(trained, tiny_model_dir):
    from diffusers import StableDiffusionPipeline

    run = trained("dreambooth")
    files, ref = run["files"], run["ref"]
    assert set(files) == {"diffusers_model", "single_file", "run_config", "model_card"}
    assert files["diffusers_model"].name == "model" and files["single_file"].name == f"{SLUG}.safetensors"
    base = _fresh_pipe(tiny_model_dir)
    assert any(not torch.equal(v, base.unet.state_dict()[k]) for k, v in ref["unet_state"].items())

    folder = StableDiffusionPipeline.from_pretrained(str(files["diffusers_model"]), local_files_only=True)
    single = StableDiffusionPipeline.from_single_file(
        str(files["single_file"]), config=str(files["diffusers_model"]), local_files_only=True, safety_checker=None
    )
    for name, pipe in (("folder", folder), ("single file", single)):
        state = pipe.unet.state_dict()
        assert state.keys() == ref["unet_state"].keys(), name
        for key, value in ref["unet_state"].items():
            assert torch.equal(state[key], value), f"{name}: {key}"
        for part in ("vae", "text_encoder"):  # the rest is the base model, unchanged
            for key, value in getattr(base, part).state_dict().items():
                assert torch.equal(getattr(pipe, part).state_dict()[key], value), f"{name}: {part}.{key}"
    assert type(folder.scheduler).__name__ == type(base.scheduler).__name__


# ------------------------------------------------------------------------------ card and config
@pytest.mark.parametrize("method", ["lora", "ti", "pivotal", "dreambooth"])
def test_model_card_run_config_and_no_leftover_temp_files(trained, method):
    run = trained(method)
    folder, files = run["folder"], run["files"]
    config = json.loads(files["run_config"].read_text(encoding="utf-8"))
    assert config["config"] == run["trainer"].spec.config
    assert config["method"] == method and config["token"] == TOKEN and len(config["images"]) == 4
    assert config["final_loss"] == run["result"]["final_loss"]
    card = files["model_card"].read_text(encoding="utf-8")
    for needle in (TOKEN, "star", "| Training images | 4 |", "| Resolution | 64 px |", "| Steps | 2",
                   str(config["final_loss"]), "### diffusers", "### AUTOMATIC1111", "### ComfyUI"):
        assert needle in card, needle
    for fmt, path in files.items():
        if fmt != "model_card":
            assert f"`{path.name}`" in card, path.name
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    artifacts = [e for e in run["events"] if e.get("event") == "artifact" and e.get("kind") == "export"]
    assert len(artifacts) == len(files)


def test_dreambooth_export_of_a_half_precision_base_is_float32_and_keeps_the_base(tiny_model_dir, tmp_path):
    """On CUDA the shared base is float16 and generation may have swapped its scheduler."""
    import copy
    from types import SimpleNamespace

    from diffusers import DDIMScheduler, EulerDiscreteScheduler
    from safetensors.torch import load_file

    from engine.train.export import export_dreambooth

    base = _fresh_pipe(tiny_model_dir)
    assert isinstance(base.scheduler, DDIMScheduler)
    loaded = SimpleNamespace(base_scheduler_class=DDIMScheduler, base_scheduler_config=dict(base.scheduler.config))
    trained_unet = copy.deepcopy(base.unet)
    base.to(torch.float16)
    base.scheduler = EulerDiscreteScheduler.from_config(base.scheduler.config)
    export_dreambooth(SimpleNamespace(pipe=base, loaded=loaded, trainables=SimpleNamespace(unet=trained_unet)),
                      tmp_path, SLUG)
    assert base.vae.dtype == base.text_encoder.dtype == torch.float16  # the shared base is left as it was
    weights = sorted((tmp_path / "model").rglob("*.safetensors")) + [tmp_path / f"{SLUG}.safetensors"]
    assert len(weights) == 4
    for path in weights:
        assert {v.dtype for v in load_file(str(path)).values()} == {torch.float32}, path
    index = json.loads((tmp_path / "model" / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
