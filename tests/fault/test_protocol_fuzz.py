"""Protocol fuzzing: malformed and hostile JSON Lines against one real engine process.

Hypothesis generates well over 1,000 lines: bytes that are not UTF-8 or not JSON, NUL and control
characters, deep nesting, lines of several MB, JSON that is not an object, broken envelopes and ids
of every wrong type, unknown methods, known methods with wrong parameters, hostile parameters for
every job kind (negative sizes, out-of-range numbers, wrong types, relative and traversing paths),
hostile model sources (pipes, devices, names too long), unknown jobs.

Each line must get exactly one error response, never an "internal" one, with the request's id
when the line carried a usable one and null otherwise (engine/protocol: a line that does not parse
has no id). A ``hello`` after every line proves the engine still serves. At the end no job was
accepted, no model loaded, the sandbox holds exactly what the test put there, and no path a fuzz
case named (they all carry the word ``s2sfuzz``) exists anywhere.
"""

from __future__ import annotations

import copy
import json
import math
import os
import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import protocol
from engine.protocol import JOB_KINDS, JOB_SCHEMAS, MAX_ID_LEN, MAX_LINE_BYTES, METHOD_SCHEMAS, METHODS, Field
from engine.protocol.training import TRAIN_CONFIG

ROOT = Path(__file__).resolve().parents[2]
MARK = "s2sfuzz"  # every path a fuzz case names contains this, so a stray write can be found
ERROR_CODES = {v for k, v in vars(protocol.ErrorCode).items() if k.isupper()} - {"engine_died"}
# Parameters naming where a job writes: the engine must refuse them unless absolute.
WRITE_PATH_FIELDS = ("out_dir", "run_dir", "class_cache_dir", "gallery", "out")
MODEL_KINDS = ("generate", "edit", "gallery", "train", "evaluate_insertion")  # need a loaded model: no_model
MIN_LINES = 1000


def fuzz_settings(n: int):
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,  # the same lines on every run: CI cannot flake
        database=None,  # and no .hypothesis folder in the repository
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.large_base_example, HealthCheck.filter_too_much],
    )


# ------------------------------------------------------------------------------------------------
# The engine under test


@dataclass(frozen=True)
class Case:
    category: str
    line: bytes
    codes: frozenset  # the error codes this line may get

    def __repr__(self) -> str:  # a failing 5 MB line must not flood the report
        more = f"… ({len(self.line)} bytes)" if len(self.line) > 300 else ""
        return f"Case({self.category!r}, {self.line[:300]!r}{more}, codes={sorted(self.codes)})"

    def _repr_pretty_(self, printer, cycle) -> None:  # how hypothesis shows a failing example
        printer.text(repr(self))


def _reject_constant(name):
    raise ValueError(name)


def expected_id(line: bytes):
    """The id an error response must carry: the request's, if the line parses and it is usable."""
    if len(line) > MAX_LINE_BYTES:
        return None
    try:
        obj = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    rid = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(rid, bool) or not isinstance(rid, (int, str)):
        return None
    return rid if not isinstance(rid, str) or len(rid) <= MAX_ID_LEN else None


class Engine:
    """``python -m engine serve`` in a sandbox, driven over raw pipes (so any bytes can be sent)."""

    def __init__(self, sandbox: Path):
        self.sandbox = sandbox
        self.home, self.tmp, self.told, self.fixtures = (sandbox / n for n in ("home", "tmp", "told", "fixtures"))
        self.cwd = sandbox / "a" / "b" / "cwd"
        for folder in (self.home, self.tmp, self.told, self.fixtures, self.cwd):
            folder.mkdir(parents=True)
        self._make_fixtures()
        self.log_path = sandbox / "engine-stderr.log"
        env = dict(os.environ)
        env.update(
            S2S_HOME=str(self.home), HOME=str(self.home), TMPDIR=str(self.tmp),
            XDG_CACHE_HOME=str(self.home / ".cache"), XDG_CONFIG_HOME=str(self.home / ".config"),
            XDG_DATA_HOME=str(self.home / ".local"), HF_HOME=str(self.home / "hf"),
            OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1",
            PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        )
        self.before = snapshot(sandbox)
        self.git_before = git_status()
        self._log = open(self.log_path, "wb")  # closed in close()
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", "serve"], cwd=self.cwd, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.sent: dict[str, int] = {}  # fuzz lines per category, each answered and checked
        self.done: dict[str, int] = {}  # test → lines it sent
        self._sentinels = 0
        self.broken = ""
        self.hello()

    def _make_fixtures(self) -> None:
        f = self.fixtures
        (f / "fake.ckpt").write_bytes(b"\x80\x04not a pickle")
        (f / "garbage.safetensors").write_bytes(b"\xff" * 64)
        (f / "plain.txt").write_text("not a model")
        (f / "no-index").mkdir()
        os.mkfifo(f / "pipe.safetensors")  # opening it for reading blocks until a writer comes
        os.symlink("loop.safetensors", f / "loop.safetensors")
        os.symlink("/dev/zero", f / "zero.safetensors")

    def _read(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            self._lines.put(raw)
        self._lines.put(None)

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read(self, timeout: float = 20.0) -> dict:
        """The next protocol line, checked to be one the client can read."""
        try:
            raw = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"the engine sent nothing for {timeout:.0f} s (alive: {self.proc.poll() is None})\n"
                        + self.log_tail())
        assert raw is not None, f"the engine closed stdout (exit {self.proc.poll()})\n{self.log_tail()}"
        assert raw.endswith(b"\n") and raw.count(b"\n") == 1
        assert len(raw) - 1 <= MAX_LINE_BYTES, f"a {len(raw)}-byte reply: longer than the client accepts"
        message = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)  # strict UTF-8, no NaN
        assert isinstance(message, dict), raw[:200]
        return message

    def request(self, request_id, method: str, params: dict | None = None) -> dict:
        self.write(json.dumps(protocol.request(request_id, method, params)).encode() + b"\n")
        message = self.read()
        assert message.get("type") == "response" and message.get("id") == request_id, message
        return message

    def hello(self) -> None:
        self._sentinels += 1
        rid = f"sentinel-{self._sentinels}"
        message = self.request(rid, "hello", {"client": "fuzz"})
        assert "error" not in message, message
        assert message["result"]["v"] == protocol.PROTOCOL_VERSION and message["result"]["pid"] == self.proc.pid
        assert self.proc.poll() is None

    def check(self, case: Case) -> None:
        """Send one fuzz line; exactly one error response must come back, then hello must work."""
        if self.broken:  # after a failure the reply stream may be out of step: say where it began
            pytest.fail(f"the engine failed earlier, on {self.broken}")
        try:
            self._check(case)
        except BaseException as exc:
            self.broken = f"{case!r}: {exc!r}"[:2000]
            raise

    def _check(self, case: Case) -> None:
        assert b"\n" not in case.line and case.line.strip(), "generator bug: not one non-blank line"
        self.write(case.line + b"\n")
        message = self.read()
        want_id = expected_id(case.line)
        assert set(message) == {"type", "id", "error"} and message["type"] == "response", (case, message)
        error = message["error"]
        assert set(error) == {"code", "message", "hint"}, (case, message)
        assert error["code"] in case.codes and error["code"] in ERROR_CODES, (case, message)
        assert isinstance(error["message"], str) and error["message"].strip() and isinstance(error["hint"], str)
        got_id = message["id"]
        assert type(got_id) is type(want_id) and got_id == want_id, (case, got_id, want_id)
        self.hello()  # nothing else was sent for this line, and the engine still serves
        self.sent[case.category] = self.sent.get(case.category, 0) + 1

    def log_tail(self) -> str:
        self._log.flush()
        return "engine log:\n" + self.log_path.read_text(errors="replace")[-3000:]

    def close(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._log.close()
        return self.proc.returncode


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under folder: kind, size and modification time (symlinks and pipes not followed)."""
    entries = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            info = path.lstat()
            entries[str(path.relative_to(folder))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return entries


def git_status() -> set[str]:
    done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    return set(done.stdout.splitlines()) if done.returncode == 0 else set()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    eng = Engine(tmp_path_factory.mktemp("protocol_fuzz"))
    yield eng
    eng.close()


def run(engine: Engine, strategy, n: int, label: str) -> int:
    """Send up to n generated lines (hypothesis stops early once it has tried every distinct one)."""
    before = sum(engine.sent.values())

    @fuzz_settings(n)
    @given(strategy)
    def one(line_case):
        engine.check(line_case)

    one()
    sent = sum(engine.sent.values()) - before
    assert sent >= min(n, 10), f"hypothesis ran only {sent} examples of {label}"
    engine.done[label] = sent
    return sent


# ------------------------------------------------------------------------------------------------
# Building lines


class Raw(str):
    """A JSON number token written as it is: 1e400 parses to infinity, which json.dumps cannot write."""


def dump(obj, ascii_only: bool = True) -> bytes:
    def swap(value):
        if isinstance(value, Raw):
            return f"\x00raw:{value}\x00"
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    text = json.dumps(swap(obj), ensure_ascii=ascii_only, separators=(",", ":"))
    text = re.sub(r'"\\u0000raw:([^"\\]*)\\u0000"', r"\1", text)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: send it escaped instead
        return dump(obj, ascii_only=True)


def req(request_id, method, params) -> dict:
    return {"type": "request", "id": request_id, "method": method, "params": params}


def case(category: str, obj, codes, ascii_only: bool = True) -> Case:
    line = obj if isinstance(obj, bytes) else dump(obj, ascii_only)
    return Case(category, line, frozenset([codes] if isinstance(codes, str) else codes))


surrogates = st.lists(st.integers(0xD800, 0xDFFF).map(chr) | st.characters(codec="utf-8"),
                      min_size=1, max_size=6).map("".join)
usable_ids = st.one_of(
    st.integers(-(2**63), 2**63),
    st.integers(),
    st.sampled_from([0, -1, 10**4000, -(10**3999), 2**53 + 1]),
    st.text(max_size=30),
    st.just("i" * MAX_ID_LEN),
    surrogates,
    st.sampled_from(["", "\x00", "\u2028", "null", "1", "../../x", "\ud800", "\udfff\ud800"]),
)
unusable_ids = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1.0, -0.0, 0.5, 1e308, Raw("1e400"), Raw("-1e400")]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.integers(MAX_ID_LEN + 1, MAX_ID_LEN + 40).map(lambda n: "L" * n),
    st.just("I" * 600_000),
)
tags = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)


@st.composite
def relative_paths(draw, required: bool = True):
    """Paths the engine must refuse as places to write: not absolute."""
    tag = f"{MARK}-{draw(tags)}"
    forms = [f"../../{tag}", f"{'../' * draw(st.integers(1, 40))}{tag}/x", tag, f"./{tag}", f"{tag}/a/../..",
             f"~/{tag}", f" /{tag}", f"\t/{tag}", f"C:\\{tag}", f"\\\\server\\share\\{tag}", f"file:///{tag}",
             f"%2e%2e/{tag}", f"{tag}\u202egnp", f"../{tag}" + "/.." * 30, "..", "."]
    return draw(st.sampled_from(forms + ([""] if required else [])))


def hostile_absolute_paths(sandbox: Path):
    """Absolute paths a well-formed job may name; the engine must not act on them without a model."""
    return tags.map(lambda t: f"{MARK}-{t}").flatmap(lambda tag: st.sampled_from([
        f"/proc/self/{tag}", f"/proc/1/root/{tag}", "/dev/null", "/dev/full", f"/sys/{tag}", f"/etc/{tag}",
        "/", f"//{tag}", f"{sandbox}/../../{tag}", f"/{tag}/" + "x/" * 1500, "/" + "a" * 300,
        f"/tmp/{tag}\u202egnp.exe", f"/{tag}/\ud800",
    ]))


TYPE_POOL = (True, False, 0, 1, -1, 3, 10**30, -(10**30), 0.5, -2.5, 1e300, "", "x", f"/{MARK}/abs",
             [], [1], ["a"], [None], {}, {"a": 1}, Raw("1e400"), Raw("-1e400"))


def _kinds(spec: Field) -> tuple:
    return spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)


def _wrong_type(value, kinds) -> bool:
    if isinstance(value, Raw):
        return True  # infinity: the wrong type, or a number that is not finite
    if isinstance(value, bool):
        return bool not in kinds
    return not isinstance(value, kinds)


# Values that fields guarded by a check (not only a type and a range) must refuse.
CHECKED = {
    ("generate", "width"): [65, 100, 2044], ("generate", "height"): [71, 1001],
    ("edit", "cross_steps"): [1.5, -0.1, [0.8, 0.2], [0.1], [0, 2], ["a", 1], [True, 1]],
    ("edit", "self_steps"): [2, [-1, 0.5], [0.1, 0.2, 0.3]],
    ("edit", "word_cross_steps"): [{"w": 2}, {"w": [0.5, 0.1]}, {"w": "x"}],
    ("edit", "reweight"): [{"w": 6}, {"w": -3}, {"w": "x"}, {"w": True}, {"w": None}],
    ("edit", "adapter"): [{}, {"folder": ""}, {"folder": 1}, {"folder": "/x", "scale": 9},
                          {"folder": "/x", "evil": 1}, {"folder": "/x", "checkpoint": 1}, {"folder": "/x", "scale": True}],
    ("gallery", "columns"): [[], [1], [{"key": f"../../{MARK}"}], [{"key": "a/b"}], [{"key": ""}],
                             [{"key": "a"}, {"key": "a"}], [{"key": "a", "label": 5}], [{"key": "a", "adapter": "x"}],
                             [{"key": "a", "extra": 1}], [{"key": "a", "adapter": {"folder": 3}}], [{"key": "k" * 41}]],
    ("gallery", "seeds"): [[], [1, 1], [-1], [2**32]],
    ("gallery", "prompts"): [[], [""], ["   "], ["x" * 501]],
    ("evaluate", "metrics"): [["nope"], ["clip_t", "FID"]],
    ("evaluate", "feature_models"): [{"nope": "x"}, {"clip": 5}, {"dino": "x" * 5000}],
    ("config", "sample_seeds"): [[-1], [0, -5]],
}


def invalid_values(spec: Field, checked=()):
    """Values the spec must refuse: wrong types, out of range, too long, NUL, not a choice."""
    kinds = _kinds(spec)
    options = [st.sampled_from([v for v in TYPE_POOL if _wrong_type(v, kinds)])]
    if checked:
        options.append(st.sampled_from(checked))
    numeric = [k for k in kinds if k in (int, float)]
    for bound, below in ((spec.minimum, True), (spec.maximum, False)):
        if bound is None or not numeric:
            continue
        if int in kinds:
            limit = math.ceil(bound) - 1 if below else math.floor(bound) + 1
            options.append(st.integers(max_value=limit) if below else st.integers(min_value=limit))
        if float in kinds:
            floats = st.floats(max_value=bound, allow_nan=False, allow_infinity=False) if below else \
                st.floats(min_value=bound, allow_nan=False, allow_infinity=False)
            options.append(floats.filter(lambda v, b=bound, lo=below: (v < b) if lo else (v > b)))
    if str in kinds:
        if spec.max_len is not None:
            options.append(st.integers(1, 3000).map(lambda k, n=spec.max_len: "y" * (n + k)))
        options.append(st.tuples(st.text(max_size=5), st.text(max_size=5)).map(lambda t: t[0] + "\x00" + t[1]))
        if spec.choices:
            near = [c.upper() for c in spec.choices] + [c + " " for c in spec.choices] + [" " + spec.choices[0]]
            options.append(st.sampled_from([c for c in near if c not in spec.choices]))
            options.append(st.text(max_size=20).filter(lambda t, c=spec.choices: t not in c))
    if list in kinds and spec.item is not None:
        bad = [v for v in TYPE_POOL if not isinstance(v, Raw) and (isinstance(v, bool) or not isinstance(v, spec.item))]
        good = "a" if spec.item is str else 7
        options.append(st.tuples(st.integers(0, 3), st.sampled_from(bad)).map(lambda t, g=good: [g] * t[0] + [t[1]]))
        if spec.max_len is not None:
            options.append(st.just([good] * (spec.max_len + 1)))
    return st.one_of(options)


unknown_keys = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["__proto__", "constructor", "__class__", "kind", "params", "id", "type", "PROMPT", " prompt"]),
    st.just("k" * 100_000),
)


@st.composite
def invalid_params(draw, schema: dict[str, Field], base: dict, where: str):
    """base (valid for schema) changed by 1-2 edits, each of which the protocol must refuse."""
    params = copy.deepcopy(base)
    names = sorted(schema)
    required = [n for n in names if schema[n].required]
    paths = [n for n in names if n in WRITE_PATH_FIELDS and where in JOB_SCHEMAS]
    ops = ["unknown"] + ["value"] * 4 * bool(names) + ["missing"] * bool(required) + ["path"] * 2 * bool(paths)
    if where == "train":
        ops.append("config")
    for _ in range(draw(st.integers(1, 2))):
        op = draw(st.sampled_from(ops))
        if op == "unknown":
            params[draw(unknown_keys.filter(lambda k: k not in schema))] = draw(st.sampled_from(TYPE_POOL))
        elif op == "missing":
            params.pop(draw(st.sampled_from(required)), None)
        elif op == "path":
            name = draw(st.sampled_from(paths))
            params[name] = draw(relative_paths(required=schema[name].required))
        elif op == "config":
            params["config"] = draw(invalid_params(TRAIN_CONFIG, {}, "config"))
        else:
            name = draw(st.sampled_from(names))
            params[name] = draw(invalid_values(schema[name], CHECKED.get((where, name), ())))
    return params


def job_bases(told: Path) -> dict[str, dict]:
    """Valid parameters for each job kind (writing only under told/)."""
    return {
        "generate": {"prompt": "a photo of a cat", "out_dir": str(told / "generate")},
        "edit": {"source_prompt": "a cat", "target_prompt": "a dog", "out_dir": str(told / "edit")},
        "gallery": {"columns": [{"key": "base"}], "prompts": ["a {token}"], "seeds": [0], "out_dir": str(told / "gal")},
        "train": {"method": "lora", "token": "sks", "class_noun": "dog", "images": [str(told / "x.png")],
                  "run_dir": str(told / "run")},
        "demo_subjects": {"out_dir": str(told / "demo")},
        "download_model": {"repo_id": f"{MARK}/none"},
        "evaluate": {"gallery": str(told / "gal")},
        "evaluate_insertion": {"token": "<sks-dog>", "class_noun": "dog", "runs": [{"key": "base"}],
                               "sources": [{"prompt": "a dog on a sofa", "seed": 0}], "out_dir": str(told / "ins")},
    }


# ------------------------------------------------------------------------------------------------
# Strategies, one per category

VALID_HELLO = b'{"type":"request","id":1,"method":"hello","params":{"client":"fuzz"}}'
BAD_UTF8 = [b"\xff", b"\xfe", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1", b"\xf0\x28\x8c\xbc", b"\xc0\xaf",
            b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xc3"]
NOT_JSON = [b"NaN", b"Infinity", b"-Infinity", b"None", b"True", b"undefined", b"{'type': 'request'}",
            b"{type: request}", b"// comment", b"/* */", b"\xef\xbb\xbf" + VALID_HELLO, b"\x00", b"\x00" * 100,
            b'{"type":"request","id":1,"method":"hello","params":{"client":NaN}}',
            b'{"type":"request","id":Infinity,"method":"hello"}',
            b'{"type":"request","id":' + b"9" * 5000 + b',"method":"hello"}',
            b'{"type":"request","id":1,"method":"hello","params":{"n":-' + b"1" * 4400 + b"}}",
            b'{"type":"request","id":1,"method":"hello",}', b'{"type":"request","id":01,"method":"hello"}',
            b"{\"type\":\"request\",\"id\":1,\"method\":'hello'}", b'{"type":"request" "id":1}']


@st.composite
def unparseable_lines(draw):
    form = draw(st.sampled_from(["utf8", "control", "truncated", "trailing", "literal", "nested", "non-object",
                                 "batch", "binary", "text"]))
    parse = {"parse_error"}
    if form == "utf8":
        at = draw(st.integers(0, len(VALID_HELLO)))
        return case("bad bytes", VALID_HELLO[:at] + draw(st.sampled_from(BAD_UTF8)) + VALID_HELLO[at:], parse)
    if form == "control":  # raw control characters: never JSON whitespace, never allowed in a string
        char = draw(st.sampled_from([c for c in range(32) if c not in (9, 10, 13)]))
        inside = VALID_HELLO.index(b"hello") + draw(st.integers(1, 4))
        at = draw(st.sampled_from([inside, draw(st.integers(0, len(VALID_HELLO)))]))
        return case("bad bytes", VALID_HELLO[:at] + bytes([char]) + VALID_HELLO[at:], parse)
    if form == "truncated":
        return case("bad json", VALID_HELLO[: draw(st.integers(1, len(VALID_HELLO) - 1))], parse)
    if form == "trailing":
        tail = draw(st.sampled_from([b"x", b"}", b"{}", b"]", b",", b"\x00", b"[]", b'"', b"null", b"1", VALID_HELLO]))
        return case("bad json", VALID_HELLO + tail, parse)
    if form == "literal":
        return case("bad json", draw(st.sampled_from(NOT_JSON)), parse)
    if form == "nested":
        depth = draw(st.sampled_from([2000, 10_000, 100_000, 400_000]))
        shape = draw(st.sampled_from(["open", "closed", "objects", "in-params"]))
        line = {"open": b"[" * depth, "closed": b"[" * depth + b"]" * depth,
                "objects": b'{"a":' * depth + b"1" + b"}" * depth,
                "in-params": VALID_HELLO[:-3] + b"[" * depth + b"]" * depth + b"}}"}[shape]
        return case("deep nesting", line, parse)
    if form == "non-object":
        values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                              | st.text(max_size=20), lambda inner: st.lists(inner, max_size=4), max_leaves=10)
        return case("not an object", draw(values), parse)
    if form == "batch":
        return case("not an object", b"[" + VALID_HELLO + b"," + VALID_HELLO + b"]", parse)
    raw = draw(st.binary(min_size=1, max_size=300) if form == "binary" else st.text(min_size=1).map(str.encode))
    raw = raw.replace(b"\n", b"?")
    return case("random bytes", raw if raw.strip() else b"?" + raw, {"parse_error", "invalid_request"})


@st.composite
def oversized_lines(draw):
    """Lines over the limit: one parse_error each, and their tail must never run as a request."""
    smuggled = b'{"type":"request","id":"smuggled","method":"hello"}'
    form = draw(st.sampled_from(["smuggle", "smuggle-later", "string", "filler", "nested", "concatenated"]))
    size = draw(st.sampled_from([MAX_LINE_BYTES + 1, MAX_LINE_BYTES + 2, 2 * MAX_LINE_BYTES + 1,
                                 3 * MAX_LINE_BYTES + 17, 5 * MAX_LINE_BYTES]))
    if form == "smuggle":  # exactly where the reader's second read of this line starts
        line = b" " * (MAX_LINE_BYTES + 1) + smuggled
    elif form == "smuggle-later":
        line = b"x" * (2 * MAX_LINE_BYTES + 2) + smuggled
    elif form == "string":
        line = VALID_HELLO[:-3] + b'"' + b"s" * size + b'"}}'
    elif form == "filler":
        line = bytes([draw(st.sampled_from([0, 32, 120, 0xFF, 0x7B]))]) * size
    elif form == "nested":
        line = b"[" * size
    else:
        line = (VALID_HELLO * (size // len(VALID_HELLO) + 1))[:size]
    if not line.strip():
        line = b"x" + line
    return case("oversized line", line, "parse_error")


@st.composite
def bad_envelopes(draw):
    obj = {"type": "request", "id": draw(usable_ids), "method": draw(st.sampled_from(METHODS) | st.text(max_size=12)),
           "params": draw(st.sampled_from([{}, {"job": "x"}, {"client": "c"}, None]))}
    defect = draw(st.sampled_from(["type", "id", "method", "params"]))
    if draw(st.booleans()) and defect != "type":
        del_or_bad = draw(st.sampled_from(["delete", "bad"]))
    else:
        del_or_bad = "bad"
    if del_or_bad == "delete":
        del obj[defect]
        if defect == "params":  # no params is fine; a bad type is the defect then
            obj["type"] = draw(st.sampled_from(["response", "event"]))
    elif defect == "type":
        obj["type"] = draw(st.one_of(st.sampled_from(["response", "event", "REQUEST", "request ", " request",
                                                      "requests", "", 1, None, [], {}, True]),
                                     st.text(max_size=10).filter(lambda t: t != "request")))
        if draw(st.booleans()):
            del obj["type"]
    elif defect == "id":
        obj["id"] = draw(unusable_ids)
    elif defect == "method":
        obj["method"] = draw(st.sampled_from([1, 0, None, [], ["hello"], {"name": "hello"}, True, 1.5]))
    else:
        obj["params"] = draw(st.sampled_from([[], [1], "params", 1, 0, True, False, 1.5, [{}]]))
    if draw(st.booleans()):
        obj[draw(st.text(max_size=8).filter(lambda k: k not in obj))] = draw(st.sampled_from(TYPE_POOL))
    if draw(st.booleans()):  # the same object, keys in another order
        obj = dict(reversed(list(obj.items())))
    return case("bad envelope", obj, "invalid_request", draw(st.booleans()))


@st.composite
def duplicate_key_envelopes(draw):
    """JSON's last duplicate key wins: a "request" overridden by a later bad "type" is not a request."""
    rid = draw(st.integers(0, 1000))
    bad = draw(st.sampled_from(['"response"', '"event"', "1", "null", '"Request"']))
    return case("bad envelope", f'{{"type":"request","id":{rid},"method":"hello","type":{bad}}}'.encode(),
                "invalid_request")


near_methods = [m.upper() for m in METHODS] + [m + " " for m in METHODS] + [" " + m for m in METHODS] + [
    m + "\x00" for m in METHODS] + [m + "\n" for m in METHODS] + [m[:-1] for m in METHODS] + [
    "_method_hello", "_method_shutdown", "__init__", "__class__", "stop", "serve", "handle_line", "send",
    "_work", "_run_job", "state", "train", "generate", "exec", "eval", "system", "shutdown()", "hello\ud800",
    "m" * 500_000, "load-model", "loadModel", "Hello", "JOBS"]


@st.composite
def unknown_methods(draw):
    method = draw(st.one_of(st.sampled_from(near_methods), st.text(max_size=40), surrogates)
                  .filter(lambda m: m not in METHODS))
    obj = {"type": "request", "id": draw(usable_ids), "method": method}
    params = draw(st.sampled_from(["absent", None, {}, {"x": 1}, {"kind": "generate"}]))
    if params != "absent":
        obj["params"] = params
    return case("unknown method", obj, "unknown_method", draw(st.booleans()))


@st.composite
def bad_method_params(draw, told: Path):
    method = draw(st.sampled_from(METHODS))
    base = {"hello": {"client": "fuzz"}, "load_model": {"source": str(told / f"{MARK}-none")},
            "submit": {"kind": "generate", "params": job_bases(told)["generate"]}, "cancel": {"job": "nope"}}
    params = draw(invalid_params(METHOD_SCHEMAS[method], base.get(method, {}), method))
    return case("bad method params", req(draw(usable_ids), method, params), "invalid_params", draw(st.booleans()))


@st.composite
def hostile_jobs(draw, told: Path):
    """submit with parameters the protocol or the engine must refuse, for every job kind."""
    form = draw(st.sampled_from(["schema"] * 6 + ["unsupported", "unknown kind"]))
    rid = draw(usable_ids)
    if form == "unsupported":  # a kind the protocol names but this engine does not run
        kind = draw(st.sampled_from([k for k in JOB_KINDS if k not in JOB_SCHEMAS]))
        params = draw(st.sampled_from([{}, {"prompt": "x"}, {"out_dir": "../../x"}, None]))
        return case("hostile job", req(rid, "submit", {"kind": kind, "params": params}), "unsupported")
    if form == "unknown kind":
        kind = draw(st.one_of(st.text(max_size=20), st.sampled_from([k.upper() for k in JOB_KINDS] + [
            "../generate", "generate\x00", "shell", "__import__", "engine.generate:run_generate_job"]))
            .filter(lambda k: k not in JOB_KINDS))
        return case("hostile job", req(rid, "submit", {"kind": kind, "params": {}}), "invalid_params")
    kind = draw(st.sampled_from(sorted(JOB_SCHEMAS)))
    params = draw(invalid_params(JOB_SCHEMAS[kind], job_bases(told)[kind], kind))
    return case("hostile job", req(rid, "submit", {"kind": kind, "params": params}), "invalid_params",
                draw(st.booleans()))


HOSTILE_TEXT = ["\u202eevil", "Z\u0351\u0352\u0353" * 50, "😀" * 300, "\u2028\u2029\x85", "{token}{class}" * 100,
                "%s%n%x{0}{}", "<script>alert(1)</script>", "'; DROP TABLE images; --", "\ud800\udfff",
                "\\x00", "$(rm -rf ~)", "`reboot`", "\x1b[2J", "\u0000".replace("\u0000", "\ufffd")]


@st.composite
def hostile_valid_model_jobs(draw, sandbox: Path):
    """Well-formed jobs with hostile values: without a model every one must be refused (no_model)."""
    kind = draw(st.sampled_from(MODEL_KINDS))
    schema = JOB_SCHEMAS[kind]
    params = job_bases(sandbox / "told")[kind]
    for name in draw(st.lists(st.sampled_from(sorted(schema)), min_size=1, max_size=5, unique=True)):
        spec = schema[name]
        if name in WRITE_PATH_FIELDS or name == "image":
            params[name] = draw(hostile_absolute_paths(sandbox))
        elif name == "images":
            params[name] = draw(st.lists(hostile_absolute_paths(sandbox), min_size=1, max_size=4))
        elif spec.choices:
            params[name] = draw(st.sampled_from(spec.choices))
        elif spec.kind is str and spec.check is None:  # checked names (file stems) have their own rules
            text = st.sampled_from(HOSTILE_TEXT) | st.just("z" * (spec.max_len or 60))
            params[name] = draw(text.map(lambda t, n=spec.max_len: t[:n] if n else t))
        elif spec.kind is bool:
            params[name] = draw(st.booleans())
        elif spec.minimum is not None and spec.maximum is not None and spec.kind in (int, (int, float)):
            params[name] = draw(st.sampled_from([int(spec.minimum), int(spec.maximum)]))
    return case("hostile valid job", req(draw(usable_ids), "submit", {"kind": kind, "params": params}), "no_model",
                draw(st.booleans()))


@st.composite
def hostile_model_sources(draw, sandbox: Path):
    """load_model with sources that are not models: refused at once, nothing queued or loaded."""
    f = sandbox / "fixtures"
    tag = f"{MARK}-{draw(tags)}"
    sources = [
        f"../../{tag}", f"./{tag}.safetensors", f"~/{tag}", tag, f"{tag}.ckpt", f"/{tag}/none.safetensors",
        "/", "/proc", "/proc/self/status", "/proc/self/mem", "/proc/self/fd/0", "/dev/null", "/dev/zero",
        "/dev/stdin", "/dev/urandom", str(sandbox), "~", str(f / "no-index"), str(f / "plain.txt"),
        str(f / "fake.ckpt"), str(f / "garbage.safetensors"), str(f / "pipe.safetensors"),
        str(f / "loop.safetensors"), str(f / "zero.safetensors"), "/" + "a" * 300, "a" * 300 + ".safetensors",
        f"/{tag}/" + "d/" * 2000, str(f / "plain.txt") + "/x", f"{f}/../fixtures/fake.ckpt", f"/{tag}/\ud800",
        f"../{tag}/x/y",
    ]
    params = {"source": draw(st.sampled_from(sources))}
    extra = draw(st.sampled_from(["none", "name", "device", "config", "pickle-off"]))
    if extra == "name":
        params["name"] = draw(st.sampled_from(HOSTILE_TEXT))[:200]
    elif extra == "device":
        params["device"] = draw(st.sampled_from(["cpu", "auto", "cuda", "mps"]))
    elif extra == "config":
        params["config"] = draw(st.sampled_from([f"../../{tag}", "/proc", str(f / "no-index")]))
    elif extra == "pickle-off":
        params["allow_pickle"] = False
    codes = {"not_found", "model_error", "refused"}
    return case("hostile model source", req(draw(usable_ids), "load_model", params), codes, draw(st.booleans()))


@st.composite
def unknown_jobs(draw):
    """cancel of jobs that do not exist, under every kind of usable id."""
    job = draw(st.one_of(st.text(max_size=100), surrogates.map(lambda s: s[:100]),
                         st.sampled_from(["", "*", "../", "j1", "0000-1", "ffff-99999", "%", "\u202e", "None"]))
               .filter(lambda j: "\x00" not in j))
    return case("unknown job", req(draw(usable_ids), "cancel", {"job": job}), "not_found", draw(st.booleans()))


# ------------------------------------------------------------------------------------------------
# Tests (the last one checks the totals and that nothing was written)


def test_job_bases_are_valid(engine):
    """The bases the hostile generators start from pass validation, so each edit is what gets refused."""
    for kind, params in job_bases(engine.told).items():
        protocol.validate_job(kind, copy.deepcopy(params))
    for kind in MODEL_KINDS:  # ...and the engine refuses them only for want of a model
        params = job_bases(engine.told)[kind]
        message = engine.request(f"base-{kind}", "submit", {"kind": kind, "params": params})
        assert message["error"]["code"] == "no_model", message


# Each fuzz test: the most lines it sends, and the fault-report row it adds once everything passed.
CATEGORIES = {
    "unparseable": (320, "not UTF-8 / not JSON / not an object, NUL and control bytes, nesting 2k-400k deep",
                    "parse_error with id null"),
    "oversized": (16, "lines of 1-5 MiB, some hiding a request past the limit",
                  "one parse_error each; the tail never ran as a request"),
    "envelope": (200, "bad envelopes: type, id (null, bool, float, list, too long), method, params",
                 "invalid_request; the id echoed only when usable"),
    "duplicate keys": (20, "duplicate keys where the last one spoils the request", "invalid_request"),
    "unknown method": (150, "unknown methods: near misses, internals, 500 kB names", "unknown_method"),
    "method params": (220, "known methods with wrong, missing, unknown, too long or NUL params",
                      "invalid_params (shutdown with bad params did not shut down)"),
    "hostile jobs": (320, "submit: negative sizes, out of range, wrong types, relative paths, bad kinds",
                     "invalid_params / unsupported for every job kind"),
    "hostile valid jobs": (90, "well-formed jobs naming /proc, /dev, escaping paths, hostile prompts",
                           "no_model: nothing queued"),
    "model sources": (100, "load_model of pipes, devices, /proc, link loops, long names, fake checkpoints",
                      "not_found / model_error / refused at once"),
    "unknown jobs": (100, "cancel of jobs that do not exist, under ids of every usable kind", "not_found"),
}


def fuzz(engine: Engine, strategy, label: str) -> int:
    """How many generated lines each got their one error response, with the engine serving after."""
    return run(engine, strategy, CATEGORIES[label][0], label)


def test_unparseable_lines(engine):
    assert fuzz(engine, unparseable_lines(), "unparseable") > 0


def test_oversized_lines(engine):
    assert fuzz(engine, oversized_lines(), "oversized") > 0


def test_line_limit_boundary(engine):
    """A line of exactly MAX_LINE_BYTES is served; one byte more is refused once, tail unread."""
    hello = b'{"type":"request","id":"at-limit","method":"hello"}'
    engine.write(hello + b" " * (MAX_LINE_BYTES - len(hello)) + b"\n")
    assert engine.read()["result"]["v"] == protocol.PROTOCOL_VERSION
    smuggled = b'{"type":"request","id":"tail","method":"hello"}'
    engine.write(b" " * (MAX_LINE_BYTES + 1) + smuggled + b"\n")
    message = engine.read()
    assert message["id"] is None and message["error"]["code"] == "parse_error", message
    engine.hello()  # the next reply is the sentinel's, not one for the smuggled "tail" request


def test_blank_lines_are_ignored(engine):
    engine.write(b"\n \n\t\r\n\x0b\x0c\n")
    engine.hello()  # no reply for blank lines: the next one is the sentinel's
    assert engine.proc.poll() is None


def test_bad_envelopes(engine):
    assert fuzz(engine, bad_envelopes(), "envelope") > 0
    assert fuzz(engine, duplicate_key_envelopes(), "duplicate keys") > 0


def test_unknown_methods(engine):
    assert fuzz(engine, unknown_methods(), "unknown method") > 0


def test_known_methods_with_bad_params(engine):
    assert fuzz(engine, bad_method_params(engine.told), "method params") > 0


def test_hostile_job_params(engine):
    assert fuzz(engine, hostile_jobs(engine.told), "hostile jobs") > 0


def test_hostile_but_well_formed_jobs_need_a_model(engine):
    assert fuzz(engine, hostile_valid_model_jobs(engine.sandbox), "hostile valid jobs") > 0


def test_hostile_model_sources(engine):
    assert fuzz(engine, hostile_model_sources(engine.sandbox), "model sources") > 0


def test_fifo_model_source_does_not_block_the_reader(engine):
    """Regression: a pipe named *.safetensors used to be opened on the reader thread, which hung."""
    message = engine.request("fifo", "load_model", {"source": str(engine.fixtures / "pipe.safetensors")})
    assert message["error"]["code"] == "refused" and "pipe" in message["error"]["message"]
    engine.hello()


@pytest.mark.parametrize("name, code", [
    ("pipe.safetensors", "refused"), ("zero.safetensors", "refused"),  # a pipe; a link to /dev/zero
    ("loop.safetensors", "not_found"),  # a link to itself (regression: was an "internal" OSError)
    ("garbage.safetensors", "refused"), ("fake.ckpt", "refused"), ("plain.txt", "model_error"),
    ("no-index", "model_error"),
])
def test_each_fixture_model_source_gets_its_own_refusal(engine, name, code):
    path = str(engine.fixtures / name)
    engine.check(case("regression", req(f"src-{name}", "load_model", {"source": path}), code))


def test_regressions_found_by_fuzzing(engine):
    # A name too long for the file system was an "internal" OSError; it is simply not there.
    engine.check(case("regression", req(7, "load_model", {"source": "/" + "n" * 300}), "not_found"))
    # String ids are bounded, so a reply echoing one always fits in a line the client accepts.
    engine.check(case("regression", req("i" * MAX_ID_LEN, "nope", {}), "unknown_method"))
    engine.check(case("regression", req("i" * (MAX_ID_LEN + 1), "nope", {}), "invalid_request"))
    # Where a training run writes must be absolute too, and a bad path is refused whatever is loaded.
    train = job_bases(engine.told)["train"]
    for key in ("run_dir", "class_cache_dir"):
        bad = {"kind": "train", "params": {**train, key: f"../{MARK}-run"}}
        engine.check(case("regression", req(key, "submit", bad), "invalid_params"))


def test_lone_surrogate_id_is_echoed_and_engine_survives(engine):
    """Regression: an id of "\\ud800" could not be written as UTF-8 and the engine stopped serving."""
    engine.write(b'{"type":"request","id":"\\ud800x","method":"nope"}\n')
    message = engine.read()
    assert message["id"] == "\ud800x" and message["error"]["code"] == "unknown_method"
    engine.hello()


def test_unknown_jobs(engine):
    assert fuzz(engine, unknown_jobs(), "unknown jobs") > 0


def test_engine_survived_and_wrote_nothing(engine, faults):
    """Runs last: the totals, and that the engine did and wrote nothing it was not told to."""
    if set(engine.done) != set(CATEGORIES):
        pytest.skip("the totals need every fuzz test of this file to have run")
    total = sum(engine.done.values())
    assert total >= MIN_LINES, f"only {total} fuzz lines were sent"
    engine.hello()
    # No job was accepted, no model was loaded (a valid generate still finds none).
    assert engine.request("jobs", "jobs")["result"] == {"jobs": []}
    job = job_bases(engine.told)["generate"]
    assert engine.request("probe", "submit", {"kind": "generate", "params": job})["error"]["code"] == "no_model"
    time.sleep(0.5)  # nothing arrives late (a deferred answer, an event)
    assert engine._lines.empty(), engine._lines.get_nowait()
    # The sandbox holds exactly what the test put there, the engine's log aside.
    after = snapshot(engine.sandbox)
    after.pop(engine.log_path.name)
    assert after == engine.before, sorted(set(after) ^ set(engine.before))
    # No path a fuzz case named exists: around the engine's working directory, in /tmp, in the repository.
    strays = [str(p) for folder in [engine.cwd, *engine.cwd.parents, Path("/tmp")]
              for p in folder.iterdir() if MARK in p.name]
    assert not strays, strays
    new_in_repo = git_status() - engine.git_before
    assert not [line for line in new_in_repo if MARK in line or ".hypothesis" in line], new_in_repo
    log = engine.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert engine.close() == 0  # and it still ends as it should: stdin closed, exit 0
    for label, (_, fault, outcome) in CATEGORIES.items():
        faults.record("protocol fuzzing", fault, tried=engine.done[label], survived=engine.done[label],
                      note=f"{outcome}; a hello answered after every line; nothing written")
