import json

import pytest

from engine import protocol
from engine.protocol import ErrorCode, ProtocolError


def test_request_round_trip():
    line = protocol.encode(protocol.request(7, "submit", {"kind": "generate", "params": {"prompt": "a dog ünïcode"}}))
    assert line.endswith("\n") and line.count("\n") == 1
    req = protocol.parse_request(protocol.decode(line))
    assert (req.id, req.method, req.params["params"]["prompt"]) == (7, "submit", "a dog ünïcode")


def test_newlines_inside_strings_stay_on_one_line():
    line = protocol.encode(protocol.event("j1", "log", message="line one\nline two"))
    assert line.count("\n") == 1
    assert protocol.decode(line)["message"] == "line one\nline two"


@pytest.mark.parametrize(
    "raw, code",
    [
        ("not json", ErrorCode.PARSE_ERROR),
        ("[1, 2]", ErrorCode.PARSE_ERROR),
        ('{"type": "request", "id": 1, "method": "hello", "params": NaN}', ErrorCode.PARSE_ERROR),
        (b"\xff\xfe{}", ErrorCode.PARSE_ERROR),
        ('{"type": "response", "id": 1}', ErrorCode.INVALID_REQUEST),
        ('{"type": "request", "id": true, "method": "hello"}', ErrorCode.INVALID_REQUEST),
        ('{"type": "request", "id": 1.5, "method": "hello"}', ErrorCode.INVALID_REQUEST),
        ('{"type": "request", "id": 1, "method": 5}', ErrorCode.INVALID_REQUEST),
        ('{"type": "request", "id": 1, "method": "hello", "params": []}', ErrorCode.INVALID_REQUEST),
        ('{"type": "request", "id": 1, "method": "rm_rf"}', ErrorCode.UNKNOWN_METHOD),
    ],
)
def test_malformed_envelopes_are_rejected_with_codes(raw, code):
    with pytest.raises(ProtocolError) as info:
        protocol.parse_request(protocol.decode(raw))
    assert info.value.code == code


def test_oversized_line_is_rejected_before_parsing():
    with pytest.raises(ProtocolError) as info:
        protocol.decode(b"x" * (protocol.MAX_LINE_BYTES + 1))
    assert info.value.code == ErrorCode.PARSE_ERROR


def test_job_params_get_defaults_and_checks():
    params = protocol.validate_job("generate", {"prompt": "a dog", "out_dir": "/tmp/x"})
    assert params["steps"] == 25 and params["guidance"] == 7.5 and params["width"] is None
    assert isinstance(protocol.validate_job("generate", {"prompt": "p", "out_dir": "/x", "guidance": 7})["guidance"], float)


@pytest.mark.parametrize(
    "bad",
    [
        {"out_dir": "/x"},  # missing prompt
        {"prompt": 3, "out_dir": "/x"},
        {"prompt": "p", "out_dir": "/x", "steps": 0},
        {"prompt": "p", "out_dir": "/x", "steps": True},
        {"prompt": "p", "out_dir": "/x", "width": 500},
        {"prompt": "p", "out_dir": "/x", "seed": -1},
        {"prompt": "p", "out_dir": "/x", "guidance": float("inf")},
        {"prompt": "p", "out_dir": "/x", "scheduler": "magic"},
        {"prompt": "p" * 5000, "out_dir": "/x"},
        {"prompt": "p\x00", "out_dir": "/x"},
        {"prompt": "p", "out_dir": "/x", "surprise": 1},
    ],
)
def test_bad_job_params_are_invalid_params(bad):
    with pytest.raises(ProtocolError) as info:
        protocol.validate_job("generate", bad)
    assert info.value.code == ErrorCode.INVALID_PARAMS
    assert info.value.message


def test_unimplemented_job_kind_is_unsupported_not_crash():
    with pytest.raises(ProtocolError) as info:
        protocol.validate_job("attention", {})  # a kind the protocol names but no engine runs yet
    assert info.value.code == ErrorCode.UNSUPPORTED


def test_error_response_shape():
    message = protocol.error_response(3, ErrorCode.REFUSED, "no", "do this")
    assert json.loads(protocol.encode(message)) == {
        "type": "response",
        "id": 3,
        "error": {"code": "refused", "message": "no", "hint": "do this"},
    }


INSERTION_BASE = {"token": "<sks-dog>", "class_noun": "dog", "runs": [{"key": "run1", "adapter": {"folder": "/r"}}],
                  "sources": [{"prompt": "a dog on a sofa", "seed": 3}], "out_dir": "/tmp/ins"}


def test_insertion_evaluation_params_default_to_the_measured_insertion_settings():
    from engine.protocol.editing import INSERTION_DEFAULTS
    from engine.server import JOB_HANDLERS, NEEDS_MODEL

    params = protocol.validate_job("evaluate_insertion", dict(INSERTION_BASE))
    assert params["shared_steps"] == INSERTION_DEFAULTS["shared_steps"] and params["cross_steps"] == 0.0
    assert params["blend"] is True and params["invert"] == "direct" and params["into"] == ""
    assert "evaluate_insertion" in protocol.JOB_KINDS and "evaluate_insertion" in JOB_HANDLERS  # hello lists it
    assert "evaluate_insertion" in NEEDS_MODEL


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"sources": []}, "at least one source"),
        ({"sources": [{"prompt": " "}]}, "prompt"),
        ({"sources": [{"prompt": "a dog", "seed": -1}]}, "seed"),
        ({"sources": [{"prompt": "a dog", "mask": "x"}]}, "unknown field"),
        ({"runs": [{"key": "../x"}]}, "key"),
        ({"metrics": ["fid"]}, "unknown metric"),
        ({"feature_models": {"inceptionv4": "x"}}, "unknown feature model"),
        ({"steps": 1}, "≥ 2"),
    ],
)
def test_bad_insertion_evaluation_params_say_what_is_wrong(change, problem):
    with pytest.raises(ProtocolError) as info:
        protocol.validate_job("evaluate_insertion", dict(INSERTION_BASE, **change))
    assert info.value.code == ErrorCode.INVALID_PARAMS and problem in info.value.message
