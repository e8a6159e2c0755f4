"""New words of several vectors: added, spelled out and unloaded the way diffusers does it."""

from __future__ import annotations

import copy

import pytest
import torch

TOKEN = "<dotty-star>"


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(str(tiny_model_dir), local_files_only=True, safety_checker=None)


def _encode(tokenizer, text_encoder, prompt):
    ids = tokenizer([prompt], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
    with torch.no_grad():
        return text_encoder(ids.input_ids)[0]


def _copies(pipe):
    return copy.deepcopy(pipe.tokenizer), copy.deepcopy(pipe.text_encoder)


def test_word_started_from_its_own_spelling_encodes_as_the_raw_identifier_did(pipe):
    from engine.train.methods import add_token
    from engine.words import spell_out, vector_tokens

    prompt = f"a photo of {TOKEN} star"
    before = _encode(pipe.tokenizer, pipe.text_encoder, prompt)  # the identifier as byte pieces
    tokenizer, text_encoder = _copies(pipe)
    ids = add_token(tokenizer, text_encoder, TOKEN, TOKEN, vectors=0)
    pieces = pipe.tokenizer(TOKEN, add_special_tokens=False).input_ids
    assert len(ids) == len(pieces) > 1
    assert tokenizer.convert_ids_to_tokens(ids) == vector_tokens(TOKEN, len(pieces))
    spelled = spell_out(tokenizer, prompt)
    assert spelled == f"a photo of {' '.join(vector_tokens(TOKEN, len(pieces)))} star"
    torch.testing.assert_close(_encode(tokenizer, text_encoder, spelled), before, atol=1e-6, rtol=0)


def test_vector_counts_and_starting_rows(pipe):
    from engine.train.methods import add_token

    weight = pipe.text_encoder.get_input_embeddings().weight
    star = pipe.tokenizer("star", add_special_tokens=False).input_ids
    tokenizer, text_encoder = _copies(pipe)
    one = add_token(tokenizer, text_encoder, "<one>", "star")  # the default: one vector, the mean
    rows = text_encoder.get_input_embeddings().weight
    torch.testing.assert_close(rows[one[0]], weight[star].mean(0))
    three = add_token(tokenizer, text_encoder, "<three>", "star", vectors=3)  # cycling through the pieces
    rows = text_encoder.get_input_embeddings().weight
    for i, token_id in enumerate(three):
        torch.testing.assert_close(rows[token_id], weight[star[i % len(star)]])
    with pytest.raises(ValueError, match="already in the tokenizer"):
        add_token(tokenizer, text_encoder, "<three>", "star", vectors=3)


def test_spell_out_leaves_one_vector_words_and_other_text_alone(pipe):
    from engine.train.methods import add_token
    from engine.words import spell_out, tokens_of_word

    tokenizer, text_encoder = _copies(pipe)
    assert spell_out(tokenizer, "a photo of a star") == "a photo of a star"
    add_token(tokenizer, text_encoder, "<single>", "star")
    add_token(tokenizer, text_encoder, "<pair>", "star", vectors=2)
    assert spell_out(tokenizer, "<single> and <pair>, again") == "<single> and <pair> <pair>_1, again"
    assert tokens_of_word(tokenizer, "<pair>") == ["<pair>", "<pair>_1"]
    assert tokens_of_word(tokenizer, "<missing>") == []


def test_attention_positions_count_every_vector_of_a_word(pipe):
    from engine.attention.align import tokenize
    from engine.train.methods import add_token

    tokenizer, text_encoder = _copies(pipe)
    add_token(tokenizer, text_encoder, "<pair>", "star", vectors=3)
    prompt = tokenize(tokenizer, "a <pair> star")
    a_tokens = len(tokenizer("a", add_special_tokens=False).input_ids)
    word = next(w for w in prompt.words if w.text == "<pair>")
    assert len(word.tokens) == 3 and word.tokens[0] == 1 + a_tokens
    assert prompt.positions_of("star") == [word.tokens[-1] + 1 + i for i in range(len(prompt.positions_of("star")))]
    assert prompt.eos == word.tokens[-1] + len(prompt.positions_of("star")) + 1


def test_applying_and_dropping_a_multi_vector_word_takes_all_its_tokens_and_only_them(tiny_model_dir, tmp_path):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    from engine.adapters import AppliedAdapters, _add_token, _drop_tokens
    from engine.train.export import DIFFUSERS_EMBEDDING
    from engine.words import tokens_of_word

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model_dir), local_files_only=True, safety_checker=None)
    folders = {}
    for name, vectors in (("<three>", 3), ("<one>", 1)):
        folders[name] = tmp_path / name.strip("<>")
        folders[name].mkdir()
        emb = torch.randn(vectors, 32)
        save_file({name: emb if vectors > 1 else emb[0]}, str(folders[name] / DIFFUSERS_EMBEDDING))
    state = AppliedAdapters()
    _add_token(pipe, state, folders["<three>"], "<three>")
    _add_token(pipe, state, folders["<one>"], "<one>")
    assert tokens_of_word(pipe.tokenizer, "<three>") == ["<three>", "<three>_1", "<three>_2"]
    _add_token(pipe, state, folders["<three>"], "<three>")  # already applied: nothing changes
    _drop_tokens(pipe, state, keep=str(folders["<one>"]))
    assert tokens_of_word(pipe.tokenizer, "<three>") == [] and "<three>_1" not in pipe.tokenizer.get_vocab()
    assert tokens_of_word(pipe.tokenizer, "<one>") == ["<one>"]
    _drop_tokens(pipe, state)
    assert pipe.tokenizer.added_tokens_encoder.keys().isdisjoint({"<one>", "<three>", "<three>_1"})
