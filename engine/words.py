"""New words in the tokenizer: one word may be several embedding vectors.

A multi-vector word ``<w>`` is stored as the tokens ``<w>``, ``<w>_1``, … ``<w>_{n-1}``, and a prompt
naming ``<w>`` is spelled out to all of them before encoding. That is the convention diffusers'
``load_textual_inversion`` (which names the tokens so when it loads an ``[n, dim]`` embedding) and
its pipelines' ``maybe_convert_prompt`` follow, as do A1111 and ComfyUI for ``emb_params``. Training
and attention maps must spell prompts out the same way, or the positions they use would not be the
ones generation uses. Written by hand because diffusers only offers the spelling-out as a method of
its pipeline classes.
"""

from __future__ import annotations


def vector_tokens(token: str, count: int) -> list[str]:
    """The tokenizer entries of a ``count``-vector word."""
    return [token] + [f"{token}_{i}" for i in range(1, count)]


def tokens_of_word(tokenizer, token: str) -> list[str]:
    """The entries ``token`` has in ``tokenizer`` now ([] when it is not a word of it)."""
    vocab = tokenizer.get_vocab()
    if token not in vocab:
        return []
    names = [token]
    while f"{token}_{len(names)}" in vocab:
        names.append(f"{token}_{len(names)}")
    return names


def spell_out(tokenizer, prompt: str) -> str:
    """``prompt`` with each multi-vector word written as all its tokens (what diffusers encodes)."""
    added = getattr(tokenizer, "added_tokens_encoder", {})
    if not added:
        return prompt
    # the same steps as diffusers' TextualInversionLoaderMixin._maybe_convert_prompt
    for token in set(tokenizer.tokenize(prompt)):
        if token in added and f"{token}_1" in added:
            prompt = prompt.replace(token, " ".join(tokens_of_word(tokenizer, token)))
    return prompt
