"""What an edit (Prompt-to-Prompt) job is configured with, and the heatmap file it writes
(stdlib only: the GUI builds and checks these without importing torch).

Defaults follow Prompt-to-Prompt's published settings: cross-attention injected for the first 80 %
of the steps, self-attention for the first 40 %, local-blend threshold 0.3, 50 DDIM steps,
guidance 7.5.

Heatmap file (``<name>-heatmaps.npz``, written by the engine, drawn by the GUI):
    meta                 JSON string: {"version": 1, "steps": N, "timesteps": [...], "size": [w, h],
                         "resolutions": [16, 8 …], "layers": {"16": [names…]}, "prompts": {…}}
                         where prompts maps "source" / "target" / "negative" to
                         {"text": str, "tokens": [str…], "words": [{"word": str, "tokens": [i…]}]}
    <prompt>_<res>       float16 (steps, layers, tokens, h, w): cross-attention probability of each
                         token (BOS … EOS, no padding), averaged over heads, per denoising step and
                         layer at that latent resolution. Values are shares of all 77 tokens, so
                         "share" normalisation is the raw value and "per-token max" divides by
                         the map's own maximum.

Result of an edit job (the response's "result"):
    original             the picture being edited as the model sees it (generated source, or the
                         input image resized to the model's grid)
    reconstruction       inverted images only: what the unedited source branch decodes to
    reconstruction_psnr  dB of reconstruction against original (None for generated sources)
    edited               the edited picture (target prompt, reweights, schedule applied)
    heatmaps             the .npz above, or "" when heatmaps were off
    mode                 "replace" | "refine" | "same" (target = source: reweight/heatmaps only)
    notes                things the user should know (e.g. a replace fell back to refine)
    source_words, target_words   [{"word": str, "tokens": [index…]}] as in the heatmap meta
    reused_source        true when the source branch came from the cache (a slider re-render)
    subject_branch       with an adapter: "target" when only the edited branch got the run (the
                         source prompt does not name its word: the original stays the base
                         model's picture), "both" when the source names it; "" without one
    inversion_cached     true when the inversion came from the cache
    seconds, device
Progress events carry "phase": "inverting" | "editing".
"""

from __future__ import annotations

from engine.protocol import SCHEDULERS, Field  # noqa: F401  (SCHEDULERS re-exported for the GUI)
from engine.protocol.names import file_name_problem

INVERSIONS = ("direct", "npi", "nulltext", "ddim")
INVERSION_TITLES = {
    "direct": "Direct inversion (exact, fast)",
    "npi": "Negative-prompt inversion (fast)",
    "nulltext": "Null-text inversion (slow, classic)",
    "ddim": "DDIM inversion (drifts at high guidance)",
}
EDIT_MODES = ("auto", "replace", "refine")
REWEIGHT_RANGE = (-2.0, 5.0)
HEATMAP_VERSION = 1


def _schedule(value) -> str | None:
    """A schedule is a fraction of the steps (0..1, from the start) or a [start, end] pair."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None if 0.0 <= value <= 1.0 else "must be a fraction between 0 and 1"
    if isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        start, end = value
        return None if 0.0 <= start <= end <= 1.0 else "must be [start, end] with 0 ≤ start ≤ end ≤ 1"
    return "must be a fraction of the steps or a [start, end] pair"


def _word_schedules(value: dict) -> str | None:
    for word, schedule in value.items():
        problem = _schedule(schedule)
        if problem:
            return f"[{word[:30]!r}] {problem}"
    return None


def _reweights(value: dict) -> str | None:
    low, high = REWEIGHT_RANGE
    for word, factor in value.items():
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not low <= factor <= high:
            return f"[{word[:30]!r}] must be a number from {low:g} to {high:g}"
    return None


def _adapter(value: dict) -> str | None:
    if not isinstance(value.get("folder"), str) or not value["folder"]:
        return "needs 'folder': a run's export folder"
    scale = value.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not -2.0 <= scale <= 4.0:
        return "'scale' must be a number from -2 to 4"
    if "checkpoint" in value and not isinstance(value["checkpoint"], str):
        return "'checkpoint' must be a checkpoint folder of the run (…/checkpoints/step-N)"
    unknown = set(value) - {"folder", "scale", "checkpoint"}
    return f"has unknown field(s) {sorted(unknown)}" if unknown else None


EDIT_PARAMS: dict[str, Field] = {
    "source_prompt": Field(str, required=True, max_len=2000),
    # Empty: the same as the source (heatmaps and reweighting of the picture as it is).
    "target_prompt": Field(str, default="", max_len=2000),
    "negative_prompt": Field(str, default="", max_len=2000),
    # An image file to edit (it is inverted); empty: the source is generated from seed + prompt.
    "image": Field(str, default="", max_len=4096),
    "seed": Field(int, default=0, minimum=0, maximum=2**32 - 1),
    # Size of a generated source (default: the model's native size); a photo's longer side is
    # scaled to the larger of the two and keeps its aspect.
    "width": Field(int, default=None, minimum=64, maximum=2048),
    "height": Field(int, default=None, minimum=64, maximum=2048),
    "invert": Field(str, default="direct", choices=INVERSIONS),
    "steps": Field(int, default=50, minimum=2, maximum=500),
    "guidance": Field((int, float), default=7.5, minimum=0.0, maximum=50.0),
    "mode": Field(str, default="auto", choices=EDIT_MODES),
    "cross_steps": Field((int, float, list), default=0.8, check=_schedule),
    "word_cross_steps": Field(dict, default=None, check=_word_schedules),  # {word: schedule}
    "self_steps": Field((int, float, list), default=0.4, check=_schedule),
    # The edited branch takes the source's latents for this share of the first steps, then goes its
    # own way: the layout is fixed before the target prompt (or a subject's run) draws (SDEdit-like).
    "shared_steps": Field((int, float), default=0.0, minimum=0.0, maximum=1.0),
    "reweight": Field(dict, default=None, check=_reweights),  # {word: factor}, -2 … 5
    "blend_words": Field(list, default=None, max_len=20, item=str),  # words whose area may change
    "blend_threshold": Field((int, float), default=0.3, minimum=0.0, maximum=1.0),
    "heatmaps": Field(bool, default=True),
    "adapter": Field(dict, default=None, check=_adapter),  # {"folder": run export, "scale": 1.0[, "checkpoint"]}
    "out_dir": Field(str, required=True, max_len=4096),
    # file stem; default: a time stamp. Joined to out_dir, so never a path ("../x") or a device name
    "name": Field(str, default="", max_len=100, check=file_name_problem),
}


def prompt_words(prompt: str) -> list[str]:
    """The words a user sees in the token strip (and names in reweight/blend): split on spaces."""
    return prompt.split()


def normalise_word(word: str) -> str:
    """How a word from the strip or the command line is matched: case and edge punctuation ignored."""
    return word.strip(".,;:!?\"'()[]").lower()


# Putting a learned subject into a picture (the Edit page's "Put … in", `s2s edit --subject`).
# Measured on the toy world (benchmarks/results/insertion-sweep-cpu.md); the run's LoRA goes on the
# target branch only, so these say how much of the source the subject's branch keeps.
# Best of a 16-setting sweep (Dotty, toy LoRA preset, 4 scenes x 8 seeds): the edited branch shares
# the source's first 30% of steps (layout), no attention injection (injected cross-attention of the
# class word erased the subject: 0% at P2P's 0.8/0.4), local blend on the object, LoRA at 1.5.
INSERTION_DEFAULTS = {"shared_steps": 0.3, "cross_steps": 0.0, "self_steps": 0.0, "blend_threshold": 0.3,
                      "lora_scale": 1.5}


def insertion_target(prompt: str, into: str, token: str, class_noun: str) -> str:
    """The target prompt of a subject insertion: the word ``into`` becomes "token noun", the phrase
    the run learned ("a dog on a sofa" → "a <rex-dog> dog on a sofa", "a cat on a sofa" with into
    "cat" → "a <rex-dog> dog on a sofa"); a word right before the class noun becomes the token alone
    ("a red star" with into "red" → "a <dotty-star> star"). Raises ValueError when the prompt has
    no such word."""
    words = prompt_words(prompt)
    want = normalise_word(into)
    index = next((i for i, w in enumerate(words) if normalise_word(w) == want), None)
    if index is None:
        raise ValueError(f"the prompt has no word {into!r} to put the subject in place of")
    word = words[index]
    core = normalise_word(word)
    start = word.lower().index(core)
    noun = normalise_word(class_noun)
    before_noun = core != noun and index + 1 < len(words) and normalise_word(words[index + 1]) == noun
    replacement = token if before_noun else f"{token} {class_noun}"
    words[index] = word[:start] + replacement + word[start + len(core):]
    return " ".join(words)


def insertion_blend_words(token: str, class_noun: str) -> list[str]:
    """Local blend for an insertion: only where the object (its noun, or the subject's word) is may change."""
    return [class_noun, token]
