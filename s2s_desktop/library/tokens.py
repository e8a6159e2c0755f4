"""Identifier tokens: the new word a personalised model learns for a subject (``<sks-dog>``).

Reads the tokenizer's vocabulary straight from its JSON files (no transformers import on the GUI
side) so a token that is already a word the model knows, or another subject's token, is refused.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

# Letter triples that CLIP's vocabulary treats as noise; tried in order for the default token.
RARE_STEMS = ("sks", "zwx", "qxv", "vkj", "jqz", "xqk", "pzv", "wqj", "kxz", "zqf")
# "<sks-dog>" (the default form) or one plain made-up word ("bsktdog"); both must be new to the model.
TOKEN_PATTERN = re.compile(r"^(<[a-z0-9][a-z0-9_-]{0,38}[a-z0-9]>|[a-z][a-z0-9]{2,24})$")


class TokenError(ValueError):
    """A token the user typed that cannot be used; the message says why and what to do."""


def noun_slug(class_noun: str) -> str:
    ascii_noun = unicodedata.normalize("NFKD", class_noun).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_noun).strip("-")
    return slug[:24].strip("-") or "thing"


def read_vocabulary(model_folder: str | Path | None) -> set[str] | None:
    """Every vocabulary entry and added token of a diffusers folder's tokenizer, lower-cased;
    ``None`` when the model is not a local folder with a readable tokenizer (then only the format
    and the other subjects are checked)."""
    if not model_folder:
        return None
    folder = Path(model_folder) / "tokenizer"
    vocab: set[str] = set()
    try:
        if (folder / "tokenizer.json").is_file():
            data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
            vocab.update((data.get("model") or {}).get("vocab") or {})
            vocab.update(t.get("content", "") for t in data.get("added_tokens") or [])
        if (folder / "vocab.json").is_file():
            vocab.update(json.loads((folder / "vocab.json").read_text(encoding="utf-8")))
        if (folder / "added_tokens.json").is_file():
            vocab.update(json.loads((folder / "added_tokens.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, AttributeError):
        return None
    return {entry.lower() for entry in vocab} or None


def _known(token: str, vocabulary: set[str] | None) -> bool:
    # CLIP's BPE marks a word's end with "</w>": "<sks-dog>" is a known word if either form is there.
    return vocabulary is not None and (token in vocabulary or token + "</w>" in vocabulary)


def validate_token(
    token: str, *, class_noun: str = "", taken: set[str] = frozenset(), vocabulary: set[str] | None = None
) -> str:
    """Return the token (trimmed, lower-cased) or raise :class:`TokenError` with the reason."""
    cleaned = token.strip().lower()
    if not TOKEN_PATTERN.match(cleaned):
        raise TokenError(
            f"{token!r} is not a valid identifier token: use angle brackets around 2-40 lower-case letters, "
            "digits, '-' or '_' (e.g. <sks-dog>), or one made-up word of 3-25 letters and digits"
        )
    if cleaned in {t.lower() for t in taken}:
        raise TokenError(f"{cleaned} is already the token of another subject; pick another")
    if _known(cleaned, vocabulary):
        raise TokenError(
            f"{cleaned} is already a word the model knows; a new subject needs a token with no prior "
            "meaning (e.g. <sks-dog>)"
        )
    if class_noun and cleaned.strip("<>") == noun_slug(class_noun):
        raise TokenError(f"the token must differ from the class noun {class_noun!r}")
    return cleaned


def default_token(class_noun: str, taken: set[str] = frozenset(), vocabulary: set[str] | None = None) -> str:
    """``<sks-NOUN>``, or the next rare stem when that one is taken or known."""
    noun = noun_slug(class_noun)
    lowered = {t.lower() for t in taken}
    for stem in RARE_STEMS:
        candidate = f"<{stem}-{noun}>"
        if candidate not in lowered and not _known(candidate, vocabulary):
            return candidate
    n = 2
    while True:  # more than ten subjects of one class: number them
        candidate = f"<sks{n}-{noun}>"
        if candidate not in lowered and not _known(candidate, vocabulary):
            return candidate
        n += 1
