"""The server in-process: every malformed line gets an error response and the server keeps serving."""

import io
import json
import subprocess
import sys
import time

import pytest

from engine.server import EngineState, Server


class Capture(io.StringIO):
    def messages(self):
        return [json.loads(line) for line in self.getvalue().splitlines()]


@pytest.fixture
def server():
    out = Capture()
    srv = Server(out, EngineState())
    yield srv, out
    srv.stop()


BAD_LINES = [
    b"hello",
    b"{",
    b"[]",
    b'"just a string"',
    b'{"type":"request","id":1}',
    b'{"type":"request","id":2,"method":"format_disk"}',
    b'{"type":"request","id":3,"method":"cancel","params":{}}',
    b'{"type":"request","id":4,"method":"cancel","params":{"job":"j999"}}',
    b'{"type":"request","id":5,"method":"submit","params":{"kind":"generate","params":{"prompt":1}}}',
    b'{"type":"request","id":6,"method":"submit","params":{"kind":"attention"}}',
    b'{"type":"request","id":7,"method":"submit","params":{"kind":"generate","params":{"prompt":"p","out_dir":"/x"}}}',
    b'{"type":"request","id":8,"method":"load_model","params":{"source":"/nonexistent/model"}}',
    b'{"type":"request","id":9,"method":"submit","params":{"kind":"generate","params":{"prompt":"p","out_dir":"rel"}}}',
    "{\"type\":\"request\",\"id\":10,\"method\":\"hello\",\"params\":{\"client\":\"\u00e9\"}}".encode() + b"\xff",
]


def test_each_malformed_line_gets_an_error_and_server_survives(server):
    srv, out = server
    for line in BAD_LINES:
        srv.handle_line(line)
    srv.handle_line(b'{"type":"request","id":99,"method":"hello"}')
    messages = out.messages()
    assert len(messages) == len(BAD_LINES) + 1
    assert all("error" in m for m in messages[:-1]), messages
    codes = [m["error"]["code"] for m in messages[:-1]]
    assert codes[:4] == ["parse_error"] * 4
    assert "unknown_method" in codes and "invalid_params" in codes and "not_found" in codes
    assert "unsupported" in codes and "no_model" in codes
    # every error carries a message a person can read
    assert all(m["error"]["message"] for m in messages[:-1])
    assert messages[-1] == {"type": "response", "id": 99, "result": messages[-1]["result"]}
    assert messages[-1]["result"]["v"] == 1


def test_request_ids_are_echoed_on_errors(server):
    srv, out = server
    srv.handle_line(b'{"type":"request","id":"abc","method":"nope"}')
    assert out.messages()[0]["id"] == "abc"


def test_pickle_checkpoint_is_refused_without_opt_in(server, tmp_path):
    srv, out = server
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04not really a pickle")
    srv.handle_line(json.dumps({"type": "request", "id": 1, "method": "load_model", "params": {"source": str(ckpt)}}))
    error = out.messages()[0]["error"]
    assert error["code"] == "refused"
    assert "pickle" in error["message"] and "run arbitrary code" in error["message"]
    assert "safetensors" in error["hint"]


@pytest.mark.parametrize(
    "payload, why",
    [
        (b"\x01\x02", "shorter"),
        ((10**9).to_bytes(8, "little") + b"{}", "claims"),
        ((2).to_bytes(8, "little") + b"{x", "not valid"),
        (
            (64).to_bytes(8, "little") + b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,9999]}}'.ljust(64) + b"\0" * 16,
            "outside",
        ),
    ],
)
def test_tampered_safetensors_is_refused_with_reason(server, tmp_path, payload, why):
    srv, out = server
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(payload)
    srv.handle_line(json.dumps({"type": "request", "id": 1, "method": "load_model", "params": {"source": str(bad)}}))
    error = out.messages()[0]["error"]
    assert error["code"] == "refused" and why in error["message"]


def test_folder_without_model_index_is_explained(server, tmp_path):
    srv, out = server
    srv.handle_line(json.dumps({"type": "request", "id": 1, "method": "load_model", "params": {"source": str(tmp_path)}}))
    error = out.messages()[0]["error"]
    assert error["code"] == "model_error" and "model_index.json" in error["message"]


def test_stdout_guard_keeps_protocol_clean():
    """After the guard, print(), C-level writes to fd 1 and warnings all land on stderr."""
    code = (
        "import os, sys, warnings\n"
        "from engine.server import guard_stdout\n"
        "proto = guard_stdout()\n"
        "print('noise from print')\n"
        "os.write(1, b'noise from C\\n')\n"
        "warnings.warn('noise from warnings')\n"
        "proto.write('{\"type\":\"event\"}\\n'); proto.flush()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == '{"type":"event"}\n'
    assert "noise from print" in result.stderr and "noise from C" in result.stderr


def test_engine_exits_on_stdin_eof():
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    proc.stdin.write(b'{"type":"request","id":1,"method":"hello"}\n')
    proc.stdin.flush()
    assert json.loads(proc.stdout.readline())["result"]["v"] == 1
    started = time.monotonic()
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    assert time.monotonic() - started < 30
