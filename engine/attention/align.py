"""Which CLIP tokens each word of a prompt is, and how the target prompt's tokens line up with the
source's: the token maps Prompt-to-Prompt's word swap ("replace") and added/removed words
("refine") inject the source's cross-attention through.

Written by hand: no library maps words to CLIP token positions or builds these maps. The refine
alignment uses the standard library's ``difflib`` (longest matching blocks) instead of a
hand-rolled Needleman-Wunsch.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from engine.protocol.editing import normalise_word, prompt_words
from engine.words import spell_out


@dataclass(frozen=True)
class Word:
    text: str
    tokens: tuple[int, ...]  # positions in the 77-token sequence (BOS is 0)


@dataclass(frozen=True)
class TokenizedPrompt:
    text: str
    ids: tuple[int, ...]  # BOS … EOS, no padding
    pieces: tuple[str, ...]  # the tokens as strings, for the heatmap file
    words: tuple[Word, ...]

    @property
    def eos(self) -> int:
        return len(self.ids) - 1

    def positions_of(self, word: str) -> list[int]:
        """Token positions of every occurrence of ``word`` (case and edge punctuation ignored)."""
        want = normalise_word(word)
        return [t for w in self.words if normalise_word(w.text) == want for t in w.tokens]

    def as_json(self) -> dict:
        return {
            "text": self.text,
            "tokens": list(self.pieces),
            "words": [{"word": w.text, "tokens": list(w.tokens)} for w in self.words],
        }


def tokenize(tokenizer, prompt: str) -> TokenizedPrompt:
    """CLIP's BPE works inside whitespace-separated words, so encoding each word alone and laying
    the results end to end gives the positions of its tokens in the whole prompt. A learned word of
    several vectors counts all its tokens, as the pipeline encodes it (engine/words.py)."""
    ids = tuple(tokenizer(spell_out(tokenizer, prompt), truncation=False).input_ids)
    words, position = [], 1
    for text in prompt_words(prompt):
        count = len(tokenizer(spell_out(tokenizer, text), add_special_tokens=False).input_ids)
        words.append(Word(text, tuple(range(position, position + count))))
        position += count
    if position != len(ids) - 1:  # a tokenizer that merges across spaces: one word per token
        pieces = tokenizer.convert_ids_to_tokens(list(ids[1:-1]))
        words = [Word(piece, (i + 1,)) for i, piece in enumerate(pieces)]
    return TokenizedPrompt(prompt, ids, tuple(tokenizer.convert_ids_to_tokens(list(ids))), tuple(words))


def replace_map(source: TokenizedPrompt, target: TokenizedPrompt, length: int = 77) -> list[list[float]]:
    """Word swap: a (length × length) matrix M with target_attention = source_attention @ M.

    Words are paired by position (same word count required). A word that is one token in both
    prompts maps one-to-one; a word whose token count changes gives each of its target tokens the
    mean of its source tokens. BOS, EOS and padding keep their order after the last word.
    """
    if len(source.words) != len(target.words):
        raise ValueError("a word swap needs the same number of words in both prompts")
    matrix = [[0.0] * length for _ in range(length)]
    matrix[0][0] = 1.0
    for src_word, tgt_word in zip(source.words, target.words, strict=True):
        if len(src_word.tokens) == len(tgt_word.tokens):
            for s, t in zip(src_word.tokens, tgt_word.tokens, strict=True):
                matrix[s][t] = 1.0
        else:
            for t in tgt_word.tokens:
                for s in src_word.tokens:
                    matrix[s][t] = 1.0 / len(src_word.tokens)
    for offset in range(length - min(source.eos, target.eos)):
        s, t = min(source.eos + offset, length - 1), target.eos + offset
        if t < length:
            matrix[s][t] = 1.0
    return matrix


def refine_map(source: TokenizedPrompt, target: TokenizedPrompt, length: int = 77) -> tuple[list[int], list[float]]:
    """Added or removed words: for each target position, the source position it copies and whether
    it copies at all (1.0) or is new and keeps its own attention (0.0)."""
    mapper, alphas = list(range(length)), [1.0] * length
    src_body, tgt_body = source.ids[1:-1], target.ids[1:-1]
    for t in range(1, target.eos):
        alphas[t] = 0.0
    matcher = difflib.SequenceMatcher(None, src_body, tgt_body, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            mapper[block.b + k + 1] = block.a + k + 1
            alphas[block.b + k + 1] = 1.0
    for offset in range(length - target.eos):
        mapper[target.eos + offset] = min(source.eos + offset, length - 1)
    return mapper, alphas


def choose_mode(requested: str, source: TokenizedPrompt, target: TokenizedPrompt) -> tuple[str, list[str]]:
    """The edit that fits the two prompts, and a note when the request could not be honoured."""
    if source.ids == target.ids:
        return "same", []
    same_count = len(source.words) == len(target.words)
    if requested == "refine" or (requested == "auto" and not same_count):
        return "refine", []
    if requested == "replace" and not same_count:
        return "refine", [
            f"word swap needs the same number of words ({len(source.words)} vs {len(target.words)}); "
            "edited as added/removed words (refine) instead"
        ]
    return "replace", []
