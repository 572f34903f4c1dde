"""Helpers for the enrichment tests: a real threaded HTTP server on loopback speaking
`/v1/chat/completions`, a scripted "smart" teacher that writes valid answers from the
prompt alone, fault injection, and the sids artifact built from `reference_sid`.

Import from test modules: `from conftest_enrich import ...` (tests/ is on sys.path).
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest

from sidreasoner_core.sid import find_sids

SECRET = "sk-test-DO-NOT-LEAK-4f9c2e7a1b"


def prompt_key(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


def task_of(messages: list[dict]) -> str:
    base = messages[1]["content"]
    if base.startswith("Analyse the following product"):
        return "analysis"
    if base.startswith("The product below has the Semantic ID"):
        return "integration"
    if base.startswith("A user interacted with these items"):
        return "reasoning"
    if base.startswith("User history (oldest first)"):
        return "narrative"
    raise AssertionError(f"unknown prompt: {base[:80]!r}")


def item_title(messages: list[dict]) -> str:
    m = re.search(r"^Title(?: \(for your understanding only; never write it\))?: (.*)$", messages[1]["content"], re.M)
    return m.group(1)


def target_title(messages: list[dict]) -> str:
    return re.search(r'actually chose next is: "(.*)" \(brand:', messages[1]["content"]).group(1)


def smart_answer(messages: list[dict]) -> str:
    """A valid answer derived from the prompt (what a good teacher would write)."""
    task, base = task_of(messages), messages[1]["content"]
    if task == "analysis":
        return "```json\n" + json.dumps({"description": "A sturdy tool. It works well.", "use_cases": ["repair", "build"],
                                         "audience": "Makers.", "features": ["steel", "light", "cheap"],
                                         "keywords": ["tool", "steel", "repair", "build", "maker"]}) + "\n```"
    if task == "integration":
        sid = find_sids(base)[0]
        return " ".join(f"Sentence {i} says that {sid} is a useful product." for i in range(12))
    sids = list(dict.fromkeys(find_sids(base)))
    if task == "reasoning":
        return (f"I notice the user started with {sids[0]} and moved on to {sids[-1]}, which tells me a lot "
                "about a steady interest in practical workshop supplies. The user may enjoy something similar.")
    return (f"The user interacted with {', '.join(sids)}. The analyst thinks the interest is steady and "
            "practical, and the user may enjoy more of the same kind of workshop supplies.")


def leaky_answer(messages: list[dict]) -> str:
    """An answer that breaks the rules: the target's title (user tasks) or the item's title."""
    task = task_of(messages)
    if task == "reasoning":
        return smart_answer(messages) + f' I bet they buy "{target_title(messages)}" next.'
    if task == "integration":
        return smart_answer(messages) + f" It is the {item_title(messages)}."
    return "Sure! Here is my analysis: it is great."  # analysis / narrative: not JSON / no SIDs


def completion(content: str, prompt_tokens: int = 100, completion_tokens: int = 50) -> dict:
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": "teacher",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


@dataclass
class Reply:
    status: int = 200
    body: dict | None = None
    raw: bytes | None = None          # sent as-is (malformed bodies)
    headers: dict = field(default_factory=dict)
    stall_s: float = 0.0              # sleep before replying (past the client's timeout)


class ChatServer:
    """Threaded loopback server; `responder(messages, nth_time_this_prompt_is_seen) -> Reply`."""

    def __init__(self, responder: Callable[[list[dict], int], Reply] | None = None):
        self.responder = responder or (lambda messages, n: Reply(body=completion(smart_answer(messages))))
        self.lock = threading.Lock()
        self.seen: Counter = Counter()           # prompt -> requests received
        self.answered: Counter = Counter()       # prompt -> 200 answers with content sent
        self.events: dict[str, list] = defaultdict(list)  # prompt -> [(arrival time, status)]
        self.auth_headers: set[str] = set()
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(length))
                messages = req["messages"]
                key = prompt_key(messages)
                with server.lock:
                    server.requests += 1
                    server.seen[key] += 1
                    n = server.seen[key]
                    server.auth_headers.add(self.headers.get("Authorization", ""))
                reply = server.responder(messages, n)
                with server.lock:
                    server.events[key].append((time.monotonic(), reply.status))
                    # a stalled reply is abandoned by a client that timed out: not an answer it got
                    if reply.status == 200 and reply.body is not None and reply.raw is None and not reply.stall_s:
                        server.answered[key] += 1
                if reply.stall_s:
                    time.sleep(reply.stall_s)
                data = reply.raw if reply.raw is not None else json.dumps(reply.body or {}).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout) or was killed

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ChatServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def build_sids_artifact(dataset_art, out) -> object:
    """A sids artifact from the dataset's reference_sid column (stand-in for the SID stage)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sidreasoner_core.artifacts import open_artifact, write_artifact
    from sidreasoner_core.dataset import read_items
    from sidreasoner_core.sid import SIDS_FILE, parse_sid

    items = read_items(dataset_art.path)
    with write_artifact(out, kind="sids", parents=[dataset_art]) as d:
        pq.write_table(pa.table({"item_id": items["item_id"], "sid": items["reference_sid"],
                                 "codes": [list(parse_sid(s)) for s in items["reference_sid"]]}), d / SIDS_FILE)
    return open_artifact(out, kind="sids")


@pytest.fixture(scope="session")
def enrich_inputs(sample_dataset, tmp_path_factory):
    """(dataset artifact, sids artifact) of the shipped sample."""
    return sample_dataset, build_sids_artifact(sample_dataset, tmp_path_factory.mktemp("sids") / "sids")


def assert_every_record_accounted(art, n_items: int, n_users: int) -> tuple:
    """Every input record is in the tables; ok rows re-validate clean; failed rows are in failed.jsonl."""
    from sidreasoner_core.corpus import FAILED_FILE, read_item_texts, read_user_reasoning
    it = read_item_texts(art.path, ok_only=False)
    us = read_user_reasoning(art.path, ok_only=False)
    assert len(it) == n_items and it["item_id"].is_unique
    assert len(us) == n_users and us["sample_id"].is_unique
    assert set(it["status"]) <= {"ok", "failed"} and set(us["status"]) <= {"ok", "failed"}
    failed = [json.loads(line) for line in (art.path / FAILED_FILE).read_text().splitlines()]
    failed_ids = {(f["kind"], f["id"]) for f in failed}
    assert failed_ids == {("item", i) for i in it.loc[it.status == "failed", "item_id"]} | \
        {("user", s) for s in us.loc[us.status == "failed", "sample_id"]}
    assert all(f["error"] for f in failed)
    return it, us, failed


GATE = 12  # answers before the teacher stops answering (the step is then killed mid-flight)


class Gate:
    """A teacher that answers the first GATE requests, then holds every new request until released."""

    def __init__(self):
        self.answered = 0
        self.lock = threading.Lock()
        self.release = threading.Event()

    def __call__(self, messages, n):
        with self.lock:
            if self.answered < GATE:
                self.answered += 1
                return Reply(body=completion(smart_answer(messages)))
        self.release.wait(30)
        return Reply(status=503, body={"error": {"message": "held"}}, stall_s=0.01)  # never counted as answered
