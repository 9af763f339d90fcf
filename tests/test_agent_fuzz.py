"""A protocol fuzzer for rpc_agent (issue 15): thousands of random and mutated request lines
over one agent's pipe (a fresh agent only after a bye).  Zero crashes, every reply one JSON
object with a boolean "ok", and the agent still serves a good request afterwards."""
from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

AGENT = Path(__file__).resolve().parents[1] / "rpc_agent" / "agent.py"
BATCH = 250
EXAMPLES = 22                       # x BATCH >= 5,000 requests per run
OPS = ["hello", "ping", "put", "run", "cleanup", "bye", "fly", ""]
FIELDS = ["id", "op", "name", "data", "sha256", "offset", "executable", "exe", "files", "argv",
          "outputs", "repeat", "number", "min_repeat_ms", "timeout", "emulator",
          "limits", "env", "return_outputs", "names", "protocol"]
GOOD_LINES = [
    {"id": 1, "op": "put", "name": "x", "data": base64.b64encode(b"#!/bin/sh\nexit 0\n").decode(),
     "executable": True},
    {"id": 2, "op": "put", "name": "in/a", "data": "AAAA"},
    {"id": 3, "op": "run", "exe": "x", "files": [["in/a", "b"]], "argv": ["@b"], "outputs": ["b"],
     "limits": {"cpu_s": 2, "fsize_bytes": 4096}, "env": {"A": "1"}, "timeout": 5},
    {"id": 4, "op": "cleanup", "names": ["in/a"]},
    {"id": 5, "op": "hello", "protocol": 1},
]

TEXTS = ["x", "in/a", "../x", "/etc/passwd", "~", ".", "a\x00b", "\ud800", "A=B", "@b", "qemu-arm",
         "data", "sha256", "\udcff", "", "\u00e9\u4e2d", "a" * 300]
NUMBERS = [0, 1, -1, 2, 2 ** 63, -2 ** 63, 2 ** 70, 1e300, -1e300, 1e-300, 0.5, float("inf"),
           float("-inf"), float("nan"), 1 << 24, 3.6e6]
POISON = [b'"\\ud800"', b'"\\udcff"', b'"a\\u0000b"', b'"A=B"', b"Infinity", b"-Infinity", b"NaN",
          b"1e999", b"1" + b"0" * 400, b"1e300", b"-1", b"1.5", b"true", b"null", b"{}", b"[]",
          b"[" * 100000, b'"' + b"\xff" * 3 + b'"', b'"' + b"a" * 100000 + b'"', b'"../../x"']
SLOTS = [("name",), ("data",), ("offset",), ("executable",), ("sha256",), ("exe",), ("files", 0),
         ("files", 0, 1), ("argv", 0), ("outputs", 0), ("names", 0), ("limits", "cpu_s"),
         ("limits", "fsize_bytes"), ("limits", "as_bytes"), ("limits", "disk_bytes"), ("env", "A"),
         ("timeout",), ("repeat",), ("number",), ("min_repeat_ms",), ("emulator",),
         ("return_outputs",), ("protocol",), ("id",)]


# Lines are made by plain functions from a Random seeded by hypothesis: drawing thousands of
# nested values through hypothesis strategies takes ~20 s, this takes well under one.
def value(r, depth=0):
    k = r.randrange(8 if depth < 3 else 5)
    if k == 0:
        return None
    if k == 1:
        return r.random() < 0.5
    if k == 2:
        return r.choice(NUMBERS) if r.random() < 0.5 else r.randint(-2 ** 40, 2 ** 40)
    if k in (3, 4):
        return r.choice(TEXTS) if r.random() < 0.7 else "".join(
            chr(r.choice([r.randrange(32, 127), r.randrange(0, 0x110000)])) for _ in range(r.randrange(6)))
    if k in (5, 6):
        return [value(r, depth + 1) for _ in range(r.randrange(4))]
    return {r.choice(FIELDS + TEXTS): value(r, depth + 1) for _ in range(r.randrange(4))}


def random_request(r):
    req = {k: value(r) for k in r.sample(FIELDS, r.randrange(7))}
    req["op"] = r.choice(OPS) if r.random() < 0.8 else value(r)
    if req["op"] == "bye" and r.random() < 0.9:
        req["op"] = "ping"          # fewer byes: most lines go to a long-lived agent
    return json.dumps(req, allow_nan=True).encode()


def poisoned(r):
    """A good request with one field (or an env name) replaced by a hostile JSON value."""
    req = json.loads(json.dumps(r.choice(GOOD_LINES)))
    slot = r.choice(SLOTS)
    node = req
    for key in slot[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(key, [["in/a", "b"]] if key == "files" else
                                   {} if key in ("limits", "env") else ["x"])
        elif isinstance(node[key], (list, dict)):
            node = node[key]
    last = slot[-1]
    if isinstance(node, list):
        node[min(last, len(node) - 1)] = "@@POISON@@"
    elif slot[0] == "env" and r.random() < 0.5:
        node["@@KEY@@"] = "1"
    else:
        node[last] = "@@POISON@@"
    poison = r.choice(POISON)
    line = json.dumps(req).encode()
    if b"@@KEY@@" in line:
        return line.replace(b'"@@KEY@@"', poison if poison.startswith(b'"') else b'"A=B"')
    return line.replace(b'"@@POISON@@"', poison)


def mutated(r):
    """A good request with random bytes flipped, inserted or cut."""
    line = bytearray(json.dumps(r.choice(GOOD_LINES)).encode())
    for _ in range(r.randint(1, 3)):
        how, at = r.randrange(4), r.randint(0, len(line))
        if how == 0 and line:
            line[min(at, len(line) - 1)] = r.randrange(256)
        elif how == 1:
            line[at:at] = bytes(r.randrange(256) for _ in range(r.randrange(7)))
        elif how == 2:
            del line[at:]
        else:
            line[at:at] = r.choice(POISON)
    return bytes(line).replace(b"\n", b" ") or b"x"


class Pipe:
    def __init__(self, root):
        self.root = root
        self.sent = self.crashes = self.agents = self.peak_rss_kib = 0
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", str(AGENT), "--root", str(self.root)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.agents += 1

    def rss(self):
        try:
            for ln in open(f"/proc/{self.proc.pid}/status"):
                if ln.startswith("VmHWM:"):
                    self.peak_rss_kib = max(self.peak_rss_kib, int(ln.split()[1]))
        except OSError:
            pass

    def ask(self, line: bytes) -> dict:
        self.sent += 1
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline()
        if not out:
            self.crashes += 1
            raise AssertionError(f"agent died on {line[:200]!r} (exit {self.proc.wait(timeout=10)})")
        ans = json.loads(out)
        assert isinstance(ans, dict) and isinstance(ans.get("ok"), bool), ans
        assert ans["ok"] or (ans["error"]["kind"] and isinstance(ans["error"]["msg"], str)), ans
        if ans.get("bye"):
            assert self.proc.wait(timeout=10) == 0
            self.rss()
            self.proc.stdin.close()
            self.proc.stdout.close()
            self.start()
        return ans

    def close(self):
        self.rss()
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0
        self.proc.stdout.close()


def test_fuzzed_requests_never_crash_the_agent(tmp_path):
    pipe = Pipe(tmp_path)

    @settings(max_examples=EXAMPLES, database=None)
    @given(st.integers(0, 2 ** 64))
    def batch(seed):
        r = random.Random(seed)
        for good in GOOD_LINES[:2]:
            assert pipe.ask(json.dumps(good).encode())["ok"]
        for _ in range(BATCH):
            pipe.ask(r.choice((random_request, poisoned, mutated))(r))
        pipe.rss()

    try:
        batch()
        for good in GOOD_LINES:
            ans = pipe.ask(json.dumps(good).encode())
            assert ans["ok"] and ans.get("error") is None, ans
    finally:
        print(f"\nagent fuzz: {pipe.sent} requests, {pipe.crashes} crashes, {pipe.agents} agents, "
              f"peak agent RSS {pipe.peak_rss_kib / 1024:.1f} MiB")
        pipe.close()
    assert pipe.sent >= 5000 and pipe.crashes == 0
    assert list(tmp_path.iterdir()) == []
