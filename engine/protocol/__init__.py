"""The engine protocol: JSON Lines over the engine's stdin/stdout.

This module is the only one both the GUI (``s2s_desktop``) and the engine import, so it uses the
standard library alone. It defines the message shapes, the method and job names, the parameter
schemas (validated on both sides), and the error codes.

    request   {"type": "request",  "id": N, "method": "...", "params": {...}}
    response  {"type": "response", "id": N, "result": {...}}
              {"type": "response", "id": N, "error": {"code": "...", "message": "...", "hint": "..."}}
    event     {"type": "event", "job": "J", "event": "started|progress|artifact|log|finished|failed|cancelled", ...}
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.protocol.names import file_prefix_problem  # stdlib only, needs nothing from here

PROTOCOL_VERSION = 1

# A line longer than this is refused before it is parsed (a runaway or hostile writer).
MAX_LINE_BYTES = 1 << 20
# Request ids are echoed in every reply, so a string id is bounded (a reply must fit in a line too).
MAX_ID_LEN = 200

METHODS = ("hello", "devices", "load_model", "submit", "cancel", "jobs", "shutdown")
JOB_KINDS = (
    "train",
    "generate",
    "edit",
    "attention",
    "invert",
    "evaluate",
    "class_images",
    "download_model",
    "demo_subjects",
    "gallery",
    "evaluate_insertion",
)
TRAIN_METHODS = ("dreambooth", "lora", "ti", "pivotal")
EVENTS = ("started", "progress", "artifact", "log", "finished", "failed", "cancelled")
TERMINAL_EVENTS = ("finished", "failed", "cancelled")

# Progress events are throttled to at most this many per second per job (the last one always goes).
MAX_PROGRESS_PER_S = 10.0


class ErrorCode:
    PARSE_ERROR = "parse_error"  # not JSON, not an object, line too long
    INVALID_REQUEST = "invalid_request"  # JSON, but not a well-formed request
    UNKNOWN_METHOD = "unknown_method"
    INVALID_PARAMS = "invalid_params"
    UNSUPPORTED = "unsupported"  # a job kind this engine version does not run yet
    NOT_FOUND = "not_found"  # a job, file or model that does not exist
    MODEL_ERROR = "model_error"  # a model could not be loaded
    REFUSED = "refused"  # refused on purpose (pickle checkpoints, unsafe paths)
    NO_MODEL = "no_model"  # a compute job was submitted before load_model
    INTERNAL = "internal"
    ENGINE_DIED = "engine_died"  # produced by the client when the process goes away
    # job failures (the "failed" event's error.code) the GUI and CLI tell apart
    DISK_FULL = "disk_full"  # no space left where a file had to go; free space, then resume/retry
    NAN_LOSS = "nan_loss"  # training went NaN/inf; stopped with the last good checkpoint kept


class ProtocolError(Exception):
    """An error that becomes an error response; carries a user-facing message and a hint."""

    def __init__(self, code: str, message: str, hint: str = "", request_id: Any = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.request_id = request_id

    def to_error(self) -> dict:
        return {"code": self.code, "message": self.message, "hint": self.hint}


# ---------------------------------------------------------------------------------------------
# Encoding / decoding


def encode(message: dict) -> str:
    """One message as one line (no embedded newlines: json escapes them).

    A lone surrogate (a peer may send the string "\\ud800") has no UTF-8 form, so writing it would
    fail; such a message is written with ASCII escapes instead and reads back the same.
    """
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(message, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text + "\n"


def request(request_id: int, method: str, params: dict | None = None) -> dict:
    return {"type": "request", "id": request_id, "method": method, "params": params or {}}


def response(request_id: Any, result: dict) -> dict:
    return {"type": "response", "id": request_id, "result": result}


def error_response(request_id: Any, code: str, message: str, hint: str = "") -> dict:
    return {"type": "response", "id": request_id, "error": {"code": code, "message": message, "hint": hint}}


def event(job: str, name: str, **fields: Any) -> dict:
    if name not in EVENTS:
        raise ValueError(f"unknown event {name!r}")
    return {"type": "event", "job": job, "event": name, **fields}


def decode(line: str | bytes) -> dict:
    """Parse one line into a message object, or raise ProtocolError(PARSE_ERROR)."""
    if isinstance(line, bytes):
        if len(line) > MAX_LINE_BYTES:
            raise ProtocolError(ErrorCode.PARSE_ERROR, f"line of {len(line)} bytes exceeds the limit")
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(ErrorCode.PARSE_ERROR, f"line is not UTF-8: {exc}") from None
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(ErrorCode.PARSE_ERROR, f"line of {len(line)} characters exceeds the limit")
    try:
        obj = json.loads(line, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.PARSE_ERROR, f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.PARSE_ERROR, "a message must be a JSON object")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


@dataclass
class Request:
    id: Any
    method: str
    params: dict


def usable_id(value: Any) -> bool:
    """Whether a request id can be echoed: an integer, or a string short enough for any reply."""
    if isinstance(value, str):
        return len(value) <= MAX_ID_LEN
    return isinstance(value, int) and not isinstance(value, bool)


def parse_request(obj: dict) -> Request:
    """Check the envelope of a request (not its params)."""
    request_id = obj.get("id")
    valid_id = usable_id(request_id)
    if obj.get("type") != "request":
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST, 'expected "type": "request"', request_id=request_id if valid_id else None
        )
    if not valid_id:
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST, f'"id" must be an integer or a string of at most {MAX_ID_LEN} characters'
        )
    method = obj.get("method")
    if not isinstance(method, str):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, '"method" must be a string', request_id=request_id)
    params = obj.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, '"params" must be an object', request_id=request_id)
    if method not in METHODS:
        raise ProtocolError(
            ErrorCode.UNKNOWN_METHOD,
            f"unknown method {method[:80]!r}",
            hint="methods: " + ", ".join(METHODS),
            request_id=request_id,
        )
    return Request(request_id, method, params)


# ---------------------------------------------------------------------------------------------
# Parameter schemas: a small declarative validator so both sides agree on what is valid.


@dataclass(frozen=True)
class Field:
    kind: type | tuple[type, ...]
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple | None = None
    max_len: int | None = None  # strings and lists
    item: type | None = None  # element type of a list
    check: Callable[[Any], str | None] | None = field(default=None, compare=False)


def _multiple_of_8(value: int) -> str | None:
    return None if value % 8 == 0 else "must be a multiple of 8"


SCHEDULERS = ("ddim", "euler", "euler_a", "dpmpp_2m", "pndm", "unipc")
DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")

MODEL_SOURCE = {
    "source": Field(str, required=True, max_len=4096),  # a folder, a .safetensors file, or a hub id
    "name": Field(str, max_len=200),
    "allow_pickle": Field(bool, default=False),
    "config": Field(str, max_len=4096),  # local diffusers folder that describes a single file
    "device": Field(str, default="auto", choices=DEVICE_CHOICES),
}

JOB_SCHEMAS: dict[str, dict[str, Field]] = {
    "generate": {
        "prompt": Field(str, required=True, max_len=2000),
        "negative_prompt": Field(str, default="", max_len=2000),
        "seed": Field(int, default=0, minimum=0, maximum=2**32 - 1),
        "batch": Field(int, default=1, minimum=1, maximum=64),
        "steps": Field(int, default=25, minimum=1, maximum=500),
        "guidance": Field((int, float), default=7.5, minimum=0.0, maximum=50.0),
        "width": Field(int, default=None, minimum=64, maximum=2048, check=_multiple_of_8),
        "height": Field(int, default=None, minimum=64, maximum=2048, check=_multiple_of_8),
        "scheduler": Field(str, default="ddim", choices=SCHEDULERS),
        "out_dir": Field(str, required=True, max_len=4096),
        # joined to out_dir as the start of each file name: never a path ("../x")
        "name_prefix": Field(str, default="", max_len=100, check=file_prefix_problem),
    },
    "download_model": {
        "repo_id": Field(str, required=True, max_len=200),
        "revision": Field(str, max_len=200),
    },
    # One personalisation run; its "config" is checked against engine.protocol.training.TRAIN_CONFIG.
    "train": {
        "method": Field(str, required=True, choices=TRAIN_METHODS),
        "token": Field(str, required=True, max_len=60),
        "class_noun": Field(str, required=True, max_len=60),
        "images": Field(list, required=True, max_len=500, item=str),  # prepared crops (PNG)
        "run_dir": Field(str, required=True, max_len=4096),
        "class_cache_dir": Field(str, default="", max_len=4096),  # prior images, shared across runs
        "config": Field(dict, default=None),
        "resume": Field(bool, default=False),  # continue from run_dir's last checkpoint
        "preflight": Field(bool, default=False),  # 2 steps + 1 sample: time per step, memory, ETA
    },
    # Photos of the toy-world subjects, for trying the library and training offline.
    "demo_subjects": {
        "out_dir": Field(str, required=True, max_len=4096),
        "count": Field(int, default=8, minimum=1, maximum=40),
        "size": Field(int, default=512, minimum=64, maximum=1024),
        "seed": Field(int, default=0, minimum=0, maximum=2**32 - 1),
    },
}

METHOD_SCHEMAS: dict[str, dict[str, Field]] = {
    "hello": {"client": Field(str, max_len=200)},
    "devices": {},
    "load_model": MODEL_SOURCE,
    "submit": {"kind": Field(str, required=True, choices=JOB_KINDS), "params": Field(dict, default=None)},
    "cancel": {"job": Field(str, required=True, max_len=100)},
    "jobs": {},
    "shutdown": {},
}


def validate(params: dict, schema: dict[str, Field], where: str = "params") -> dict:
    """Return params with defaults filled in, or raise ProtocolError(INVALID_PARAMS)."""
    if not isinstance(params, dict):
        raise ProtocolError(ErrorCode.INVALID_PARAMS, f"{where} must be an object")
    unknown = sorted(k for k in params if k not in schema)
    if unknown:
        names = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise ProtocolError(
            ErrorCode.INVALID_PARAMS, f"{where}: unknown field(s) {names}", hint="known: " + ", ".join(schema)
        )
    out: dict = {}
    for name, spec in schema.items():
        if name not in params or params[name] is None:
            if spec.required:
                raise ProtocolError(ErrorCode.INVALID_PARAMS, f"{where}.{name} is required")
            out[name] = spec.default
            continue
        out[name] = _check_field(params[name], spec, f"{where}.{name}")
    return out


def _check_field(value: Any, spec: Field, where: str) -> Any:
    kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
    # bool is an int subclass in Python; it is never a valid number here.
    if isinstance(value, bool) and bool not in kinds:
        raise ProtocolError(ErrorCode.INVALID_PARAMS, f"{where} must be {_kind_name(kinds)}, not a boolean")
    if not isinstance(value, kinds):
        raise ProtocolError(
            ErrorCode.INVALID_PARAMS, f"{where} must be {_kind_name(kinds)}, not {type(value).__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ProtocolError(ErrorCode.INVALID_PARAMS, f"{where} must be finite")
    if spec.minimum is not None and isinstance(value, (int, float)) and value < spec.minimum:
        raise ProtocolError(ErrorCode.INVALID_PARAMS, f"{where} must be ≥ {spec.minimum}, got {value}")
    if spec.maximum is not None and isinstance(value, (int, float)) and value > spec.maximum:
        raise ProtocolError(ErrorCode.INVALID_PARAMS, f"{where} must be ≤ {spec.maximum}, got {value}")
    if spec.max_len is not None and isinstance(value, (str, list)) and len(value) > spec.max_len:
        raise ProtocolError(ErrorCode.INVALID_PARAMS, f"{where} is too long ({len(value)} > {spec.max_len})")
    if isinstance(value, str) and "\x00" in value:
        raise ProtocolError(ErrorCode.INVALID_PARAMS, f"{where} contains a NUL character")
    if spec.choices is not None and value not in spec.choices:
        raise ProtocolError(
            ErrorCode.INVALID_PARAMS,
            f"{where} must be one of {', '.join(map(str, spec.choices))}; got {str(value)[:40]!r}",
        )
    if spec.item is not None and isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, spec.item) or isinstance(item, bool):
                raise ProtocolError(ErrorCode.INVALID_PARAMS, f"{where}[{i}] must be {spec.item.__name__}")
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise ProtocolError(ErrorCode.INVALID_PARAMS, f"{where} {problem}")
    return float(value) if float in kinds and isinstance(value, int) else value


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "a boolean", dict: "an object"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def validate_method_params(method: str, params: dict) -> dict:
    return validate(params, METHOD_SCHEMAS[method], where=method)


def validate_job(kind: str, params: dict | None) -> dict:
    if kind not in JOB_SCHEMAS:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED,
            f"job kind {kind!r} is not available in this version of the engine",
            hint="available: " + ", ".join(JOB_SCHEMAS),
        )
    params = validate(params or {}, JOB_SCHEMAS[kind], where=kind)
    if kind == "train":
        from engine.protocol.training import validate_config

        params["config"] = validate_config(params["config"])
    return params


# Prompt-to-Prompt edits of a generated or inverted image (defined beside their heatmap format).
from engine.protocol.editing import EDIT_PARAMS  # noqa: E402  (needs Field, defined above)

JOB_SCHEMAS["edit"] = EDIT_PARAMS

# Galleries of runs × prompts × seeds, and their scores.
from engine.protocol.gallery import EVALUATE_PARAMS, GALLERY_PARAMS  # noqa: E402

JOB_SCHEMAS["gallery"] = GALLERY_PARAMS
JOB_SCHEMAS["evaluate"] = EVALUATE_PARAMS

# Putting a subject into pictures, measured per run (beside the gallery evaluation).
from engine.protocol.insertion import EVALUATE_INSERTION_PARAMS  # noqa: E402

JOB_SCHEMAS["evaluate_insertion"] = EVALUATE_INSERTION_PARAMS
