"""What each personalisation method trains. The loop (``engine/train/loop.py``) is the same for all;
a method only decides which weights learn, at which rate, and what a checkpoint holds.

- dreambooth: a float32 copy of the whole UNet (the loaded model stays as it was, for generation)
- lora:       LoRA layers on the UNet's attention projections (to_q, to_k, to_v, to_out.0), or on its
              ResNet convolutions and feed-forward layers, or both (config ``lora_layers``)
- ti:         one new token's embedding row in a copy of the text encoder
- pivotal:    ti + lora, trained together with a learning rate each

The loaded pipeline is shared with generation, so every change to it is undone by ``restore()``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from engine.protocol.training import fill_prompt
from engine.words import vector_tokens

# Module-name suffixes per ``lora_layers`` choice (peft matches a target to the end of a module's
# path). conv1/conv2 exist only in ResNet blocks; the feed-forward pair is each transformer's MLP.
ATTENTION_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
CONVOLUTION_TARGETS = ["conv1", "conv2", "ff.net.0.proj", "ff.net.2"]
LORA_TARGETS = {
    "attention": ATTENTION_TARGETS,
    "convolutions": CONVOLUTION_TARGETS,
    "all": ATTENTION_TARGETS + CONVOLUTION_TARGETS,
}
ADAPTER = "s2s"


@dataclass
class Trainables:
    method: str
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    param_groups: list[dict]
    token_ids: list[int] = field(default_factory=list)  # the new word's ids (ti, pivotal)
    trains_text: bool = False  # text encoder output changes every step: prompt embeddings not cacheable
    _restore: list = field(default_factory=list)
    _frozen_rows: torch.Tensor | None = None  # the embedding matrix as it was, to keep other rows exact

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for group in self.param_groups for p in group["params"]]

    def after_step(self) -> None:
        """Textual inversion trains one row of a shared matrix: put every other row back, bit for bit."""
        if self._frozen_rows is None:
            return
        weight = self.text_encoder.get_input_embeddings().weight
        keep = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
        keep[self.token_ids] = False
        with torch.no_grad():
            weight[keep] = self._frozen_rows[keep]

    def freeze_word(self) -> None:
        """Pivotal tuning past its pivot: the word stays as it is, only the LoRA goes on learning."""
        weight = self.text_encoder.get_input_embeddings().weight
        weight.requires_grad_(False)
        weight.grad = None  # (an optimizer skips a parameter without a gradient)
        self.trains_text = False

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds: only what trains."""
        state: dict[str, torch.Tensor] = {}
        if self.method in ("lora", "pivotal"):
            state.update({f"unet.{k}": v for k, v in lora_state_dict(self.unet).items()})
        if self.method == "dreambooth":
            state.update({f"unet.{k}": v for k, v in self.unet.state_dict().items()})
        if self.token_ids:
            state["embeddings"] = self.text_encoder.get_input_embeddings().weight[self.token_ids].detach().clone()
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        unet_state = {k[5:]: v for k, v in state.items() if k.startswith("unet.")}
        if unet_state and self.method in ("lora", "pivotal"):
            from peft import set_peft_model_state_dict

            result = set_peft_model_state_dict(self.unet, unet_state, adapter_name=ADAPTER)
            if getattr(result, "unexpected_keys", None):
                raise ValueError(f"checkpoint does not fit this model ({len(result.unexpected_keys)} unknown weights)")
        elif unet_state:
            self.unet.load_state_dict(unet_state)  # a full fine-tune: every weight, strictly
        if "embeddings" in state:
            with torch.no_grad():
                weight = self.text_encoder.get_input_embeddings().weight
                weight[self.token_ids] = state["embeddings"].to(weight.device, weight.dtype)

    def restore(self) -> None:
        """Undo what setup did to the shared pipeline (LoRA layers out, UNet back on its device)."""
        while self._restore:
            self._restore.pop()()


def setup(method: str, pipeline, config: dict, token: str, class_noun: str, device: str) -> Trainables:
    undo: list = []
    try:
        return _setup(method, pipeline, config, token, class_noun, device, undo)
    except BaseException:
        while undo:  # a half-done setup must not leave LoRA layers in the model generation uses
            undo.pop()()
        raise


def _setup(method, pipeline, config, token, class_noun, device, undo: list) -> Trainables:
    unet, text_encoder, tokenizer = pipeline.unet, pipeline.text_encoder, pipeline.tokenizer
    groups: list[dict] = []
    token_ids: list[int] = []
    frozen_rows = None
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    if method == "dreambooth":
        original_device = unet.device
        trained = copy.deepcopy(unet).to(device=device, dtype=torch.float32)
        if original_device.type != "cpu":  # the frozen original waits in RAM while its copy trains
            unet.to("cpu")
            undo.append(lambda: unet.to(original_device))
        trained.requires_grad_(True)
        unet = trained
        groups.append({"params": [p for p in unet.parameters() if p.requires_grad], "lr": config["learning_rate"]})
    if method in ("lora", "pivotal"):
        # LoRA's random init comes from the run's seed: the same config gives the same run
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config["seed"])
            add_lora(unet, config["rank"], config["alpha"], config.get("lora_layers", "attention"))
        undo.append(lambda: remove_lora(pipeline.unet))
        params = [p for n, p in unet.named_parameters() if "lora_" in n]
        for p in params:  # trainable weights stay float32 under fp16/bf16 autocast
            p.data = p.data.float()
        groups.append({"params": params, "lr": config["learning_rate"]})
    if method in ("ti", "pivotal"):
        tokenizer = copy.deepcopy(tokenizer)
        text_encoder = copy.deepcopy(text_encoder).to(device=device, dtype=torch.float32)
        init_word = fill_prompt(config["init_word"], token, class_noun) or class_noun
        token_ids = add_token(tokenizer, text_encoder, token, init_word, config.get("word_vectors", 1))
        weight = text_encoder.get_input_embeddings().weight
        frozen_rows = weight.detach().clone()
        weight.requires_grad_(True)
        groups.append({"params": [weight], "lr": config["embedding_learning_rate"], "weight_decay": 0.0})
    if config.get("gradient_checkpointing") and hasattr(unet, "enable_gradient_checkpointing"):
        unet.enable_gradient_checkpointing()
        undo.append(unet.disable_gradient_checkpointing)
    return Trainables(
        method=method,
        unet=unet,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        param_groups=groups,
        token_ids=token_ids,
        trains_text=bool(token_ids),
        _restore=undo,
        _frozen_rows=frozen_rows,
    )


# ------------------------------------------------------------------------------------- LoRA
def lora_targets(layers: str | None) -> list[str]:
    """The module suffixes for a ``lora_layers`` choice; runs from before the choice existed: attention."""
    return list(LORA_TARGETS[layers or "attention"])


def add_lora(unet: torch.nn.Module, rank: int, alpha: float, layers: str = "attention") -> None:
    from peft import LoraConfig, inject_adapter_in_model

    # peft's injection (not diffusers' unet.add_adapter: it needs a newer peft than we pin); peft
    # wraps Conv2d layers too (A: a conv of the layer's kernel to rank channels, B: a 1×1 conv back)
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=lora_targets(layers))
    inject_adapter_in_model(config, unet, adapter_name=ADAPTER)


def lora_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(unet, adapter_name=ADAPTER)


def remove_lora(model: torch.nn.Module) -> None:
    """Swap every LoRA-wrapped layer back for its base layer. Written by hand: peft's own unloading
    lives on PeftModel/LoraModel wrappers, which an injected model does not have."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        model.peft_config.pop(ADAPTER, None)
        if not model.peft_config:  # an empty one makes the next injection warn about "multiple adapters"
            del model.peft_config


# ------------------------------------------------------------------------------------- new token
def add_token(tokenizer, text_encoder, token: str, init_word: str, vectors: int = 1) -> list[int]:
    """Add ``token`` as a new word of ``vectors`` embedding vectors (0: one per sub-token of
    ``init_word``), starting as ``init_word``: a one-vector word as the mean of its sub-tokens (as
    diffusers' textual_inversion.py starts from its initializer token), a longer word vector i as
    sub-token i (cycling, as diffusers' advanced DreamBooth-LoRA script starts from its initializer
    concept). With ``init_word`` = ``token`` and 0 vectors the word starts exactly as the model read
    the raw identifier before it was a word."""
    init_ids = tokenizer(init_word, add_special_tokens=False).input_ids or [tokenizer.eos_token_id]
    names = vector_tokens(token, vectors or len(init_ids))
    if tokenizer.add_tokens(names) != len(names):
        raise ValueError(f"{token} is already in the tokenizer; choose a token the model does not know")
    token_ids = tokenizer.convert_tokens_to_ids(names)
    embeddings = text_encoder.get_input_embeddings()
    if max(token_ids) >= embeddings.weight.shape[0]:
        text_encoder.resize_token_embeddings(len(tokenizer))
        embeddings = text_encoder.get_input_embeddings()
    with torch.no_grad():
        if len(token_ids) == 1:
            embeddings.weight[token_ids[0]] = embeddings.weight[init_ids].mean(0)
        else:
            source = [init_ids[i % len(init_ids)] for i in range(len(token_ids))]
            embeddings.weight[token_ids] = embeddings.weight[source].clone()
    return token_ids
