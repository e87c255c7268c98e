"""`rcfd serve`: OpenRLHF-shaped requests over real HTTP, the same rewards as the Python RCfDReward, and
what hostile or careless clients get (in-process servers over callable rewards: fast)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from rcfd.config import load_config
from rcfd_testing import TINY
from rcfd.integrations.serve import PATH, BadRequest, RewardService

pytest.importorskip("fastapi", reason="rcfd serve is the 'serve' extra (in the test extra)")
pytest.importorskip("uvicorn", reason="rcfd serve is the 'serve' extra (in the test extra)")

REWARDS = "reward.names=[loglik,serve_rewards:words_or_nan]"
HELPERS = str(Path(__file__).parent / "helpers")
PROMPTS = ["The river flows", "A city of", "In the year", "The first king", "Music is", "The old bridge"]
RESPONSES = [" through hills and", " towers", " of the flood we", " ruled", " a fine art of many", " fell down"]
DEMOS = [" to the sea", " many bridges and towers", " of the great flood", " ruled the land", " sound", " collapsed"]


def request(i: int, n: int = 4) -> dict:
    rows = [(i + j) % len(PROMPTS) for j in range(n)]
    return {"query": [PROMPTS[r] + RESPONSES[r] for r in rows], "prompts": [PROMPTS[r] for r in rows],
            "labels": [DEMOS[r] for r in rows]}


def post(url: str, body, timeout: float = 60) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HELPERS, os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "rcfd", "serve", "--task", "tiny", "--set", REWARDS,
                             "--port", str(port), "--max-body-mb", "0.05", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            with urllib.request.urlopen(base + "/health", timeout=1) as resp:
                if json.loads(resp.read())["status"] == "ok":
                    break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"rcfd serve exited: {proc.stdout.read()}")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("rcfd serve did not come up within 120 s")
    yield proc, base
    if proc.poll() is None:
        proc.kill()


@pytest.fixture(scope="module")
def python_reward():
    """The Python reward function the server must agree with, built from the same config."""
    from rcfd.integrations.serve import reward_from_config

    sys.path.insert(0, HELPERS)
    try:
        return reward_from_config(load_config(TINY, [REWARDS]), progress=False)[0]
    finally:
        sys.path.remove(HELPERS)


def expected(reward, body: dict) -> list[float]:
    """What the Python reward function gives (a row scored in another batch differs by float32 padding
    noise, about 1e-5 relative: the tests compare with rel=1e-4)."""
    responses = [q[len(p):] for q, p in zip(body["query"], body["prompts"])]
    return reward(prompts=body["prompts"], completions=responses, demonstration=body["labels"])


@pytest.mark.slow  # a server subprocess (~20 s to start); the parsing checks below stay in the fast suite
def test_served_rewards_equal_the_python_reward_function_under_concurrent_clients(server, python_reward):
    _, base = server
    url = base + "/get_reward"
    status, answer = post(url, request(0))
    assert status == 200 and answer["rewards"] == answer["scores"]
    assert answer["rewards"] == pytest.approx(expected(python_reward, request(0)), rel=1e-4, abs=1e-4)
    wanted = {i: expected(python_reward, request(i)) for i in range(len(PROMPTS))}

    def client(c: int) -> list[bool]:
        ok = []
        for j in range(50):
            i = (c + j) % len(PROMPTS)
            status, answer = post(url, request(i))
            ok.append(status == 200 and answer["rewards"] == pytest.approx(wanted[i], rel=1e-4, abs=1e-4))
        return ok

    with ThreadPoolExecutor(8) as pool:
        results = [ok for oks in pool.map(client, range(8)) for ok in oks]
    assert len(results) == 400 and all(results)


@pytest.mark.slow  # a server subprocess (~20 s to start); the parsing checks below stay in the fast suite
@pytest.mark.parametrize("body, status, reason", [
    (b"{not json", 400, "not valid JSON"),
    ({"query": ["a b"], "prompts": ["a"]}, 422, "missing field 'labels'"),
    ({"query": ["a b", "c d"], "prompts": ["a"], "labels": ["x"]}, 422, "same length"),
    ({"query": ["zzz"], "prompts": ["a"], "labels": ["x"]}, 422, "does not start with its prompt"),
    ({"query": ["a" * 60000], "prompts": ["a"], "labels": ["x"]}, 413, "over the limit"),
    ({"query": ["a" + " b" * 2000], "prompts": ["a"], "labels": ["x"]}, 413, "over --max-row-tokens"),
    ({"query": ["A NaN", "A b"], "prompts": ["A", "A"], "labels": [" x", " y"]}, 500, "not finite"),
])
def test_bad_requests_get_a_one_line_reason_and_the_server_keeps_serving(server, python_reward, body, status,
                                                                          reason):
    _, base = server
    got, answer = post(base + "/get_reward", body)
    assert got == status and reason in answer["error"] and "\n" not in answer["error"]
    ok, answer = post(base + "/get_reward", request(1))  # still serving
    assert ok == 200 and answer["rewards"] == pytest.approx(expected(python_reward, request(1)), rel=1e-4, abs=1e-4)


@pytest.mark.slow  # a server subprocess (~20 s to start); the parsing checks below stay in the fast suite
def test_sigterm_stops_the_server_cleanly(server):
    """Runs alone as well as after the others: it serves one request of its own first."""
    proc, base = server
    assert post(base + "/get_reward", request(0))[0] == 200
    with urllib.request.urlopen(base + "/health", timeout=5) as resp:
        health = json.loads(resp.read())
    assert health["rewards"] == ["loglik", "words_or_nan"] and health["requests"] > 0
    assert len(health["demo_std"]) == 2 and all(s > 0 for s in health["demo_std"])
    proc.send_signal(signal.SIGTERM)  # what a process manager sends
    assert proc.wait(timeout=30) == 0
    assert "stopped after" in proc.stdout.read()


class _Stack:
    names = ["r"]


class _Reward:
    stack = _Stack()


@pytest.mark.parametrize("labels, message", [
    (["x"], "not a demonstration reward"), (["[1, 2]"], "1 finite number"), ([float("inf")], "1 finite number"),
])
def test_precomputed_demonstration_rewards_are_checked(labels, message):
    service = RewardService(_Reward(), labels="reward")
    with pytest.raises(BadRequest, match=message):
        service.parse(json.dumps({"query": ["a b"], "prompts": ["a"], "labels": labels}).encode())
    rows = service.parse(json.dumps({"query": ["a b"], "prompts": ["a"], "labels": [2.5]}).encode())
    assert rows.responses == [" b"] and rows.demo_rewards.tolist() == [[2.5]]


# ---------------------------------------------------------------- in-process servers over callable rewards
def words(prompts, completions, **kwargs):
    if any("BOOM" in c for c in completions):
        raise ValueError("this reward cannot read BOOM")
    return [float(len(c.split())) for c in completions]


def letters(prompts, completions, **kwargs):
    return [float(sum(ch.isalpha() for ch in c)) for c in completions]


def slow_words(prompts, completions, **kwargs):
    time.sleep(0.1)  # one scoring call: what lets a test see the order calls are made in
    return [float(len(c.split())) for c in completions]


@contextmanager
def running(rewards, demo_std=None, labels="text", header_timeout_s=10.0, **app_args):
    """A real uvicorn server on a free port in a thread, in front of an RCfDReward over ``rewards``."""
    import uvicorn

    from rcfd.integrations.serve_app import build_app, guarded_protocol
    from rcfd.integrations.trl import RCfDReward

    service = RewardService(RCfDReward(rewards, demo_std=demo_std), labels=labels,
                            max_row_tokens=app_args.pop("max_row_tokens", 1024))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(service, **app_args), host="127.0.0.1", port=port,
                                           log_level="warning", http=guarded_protocol(header_timeout_s)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def one_row(prompt: str, response: str, demo: str) -> dict:
    return {"query": [prompt + response], "prompts": [prompt], "labels": [demo]}


def test_a_row_gets_the_same_reward_alone_or_in_any_batch_with_several_rewards():
    """OpenRLHF posts one rollout per request: with K rewards each term is measured in the demonstrations'
    std, −Σ_k ((R_k − R_k,d) / σ_k)², not whitened over the request (undefined for one row)."""
    std = [2.0, 5.0]
    with running([words, letters], demo_std=std) as base:
        whole = request(0, n=6)
        status, answer = post(base + PATH, whole)
        assert status == 200 and answer["rewards"] == answer["scores"]
        alone = [post(base + PATH, one_row(p, q[len(p):], d))[1]["rewards"][0]
                 for q, p, d in zip(whole["query"], whole["prompts"], whole["labels"])]
    assert answer["rewards"] == pytest.approx(alone, abs=1e-5)
    for q, p, d, got in zip(whole["query"], whole["prompts"], whole["labels"], answer["rewards"]):
        r, rd = words([p], [q[len(p):]])[0], words([p], [d])[0]
        a, ad = letters([p], [q[len(p):]])[0], letters([p], [d])[0]
        assert got == pytest.approx(-((r - rd) / std[0]) ** 2 - ((a - ad) / std[1]) ** 2, abs=1e-5)
    assert answer["extra_logs"]["rcfd/words"] == [words([p], [q[len(p):]])[0] for q, p in zip(whole["query"],
                                                                                             whole["prompts"])]


def test_a_bad_row_fails_its_own_request_only():
    """Requests that wait together are scored together; a row that breaks the reward, or one that is not
    valid, fails its own request with one line, and the others get their rewards."""
    bodies = [request(0, n=3), one_row("A", " BOOM", " x"), one_row("A", " b", "\ud800"), one_row("", " b", " x"),
              request(2, n=3)]
    with running([words], batch_wait_ms=300) as base:
        with ThreadPoolExecutor(len(bodies)) as pool:
            got = list(pool.map(lambda b: post(base + PATH, b), bodies))
    (ok1, a1), (boom, b), (surrogate, c), (empty, e), (ok2, a2) = got
    assert (ok1, ok2) == (200, 200) and len(a1["rewards"]) == 3 and len(a2["rewards"]) == 3
    assert boom == 500 and "cannot read BOOM" in b["error"]
    assert surrogate == 422 and "not valid Unicode" in c["error"]
    assert empty == 422 and "prompt is empty" in e["error"]


@pytest.mark.parametrize("labels, body, status, reason", [
    ("text", one_row("A", " b", "  "), 422, "demonstration (label) is empty"),
    ("reward", {"query": ["A b"], "prompts": ["A"], "labels": [True]}, 422, "not a demonstration reward"),
    ("reward", {"query": ["A b"], "prompts": ["A"], "labels": [-1e30]}, 422, "overflows"),
    ("text", b"[" * 1000 + b"]" * 1000, 400, "nested too deeply"),
    ("text", one_row("A", " b" * 300, " x"), 413, "over --max-row-tokens 500"),
])
def test_careless_requests_get_a_json_error_naming_the_problem(labels, body, status, reason):
    with running([words], labels=labels, max_row_tokens=500) as base:
        got, answer = post(base + PATH, body)
        assert got == status and reason in answer["error"] and "\n" not in answer["error"]
        good = one_row("A", " b c", " d" if labels == "text" else 1.0)
        assert post(base + PATH, good)[0] == 200  # still serving


def test_unknown_paths_and_methods_answer_json():
    with running([words]) as base:
        assert post(base + "/nothing", {})[0] == 404
        req = urllib.request.Request(base + PATH)  # a GET
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        assert info.value.code == 405 and "error" in json.loads(info.value.read())


def test_a_short_request_is_not_kept_waiting_behind_a_long_one():
    """Calls hold at most max_batch_tokens and take rows from every waiting request in turn."""
    long = {"query": ["A" + " word" * 20] * 40, "prompts": ["A"] * 40, "labels": [" x"] * 40}
    done = {}

    def send(name, body, delay):
        time.sleep(delay)
        status, _ = post(base + PATH, body)
        done[name] = (status, time.monotonic())

    with running([slow_words], max_row_tokens=200, max_batch_tokens=500, batch_wait_ms=1) as base:
        with ThreadPoolExecutor(2) as pool:  # the long request needs >= 8 calls of 0.1 s
            list(pool.map(lambda a: send(*a), [("long", long, 0), ("short", one_row("A", " b", " c"), 0.15)]))
    assert done["long"][0] == done["short"][0] == 200
    assert done["short"][1] < done["long"][1] - 0.3


def test_a_shared_secret_guards_the_rewards():
    with running([words], secret="s3cret") as base:
        assert post(base + PATH, one_row("A", " b", " c"))[0] == 401
        assert post(base + PATH + "?secret=s3cret", one_row("A", " b", " c"))[0] == 200
        req = urllib.request.Request(base + PATH, data=json.dumps(one_row("A", " b", " c")).encode(),
                                     headers={"Authorization": "Bearer s3cret"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(base + "/health", timeout=10) as resp:  # health stays open
            assert resp.status == 200


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def test_slow_clients_are_cut_off():
    """Headers must arrive within the header timeout even when bytes trickle in; a body within the request
    timeout (408); a client that goes away mid-body leaves no traceback."""
    with running([words], header_timeout_s=0.5, request_timeout_s=0.5) as base:
        trickler = _connect(base)
        start, closed = time.monotonic(), False
        trickler.sendall(b"POST /get_reward HTTP/1.1\r\n")
        while time.monotonic() - start < 4 and not closed:
            try:
                trickler.sendall(b"X")
                closed = trickler.recv(1024) == b"" if _readable(trickler) else False
            except OSError:
                closed = True
            time.sleep(0.05)
        assert closed and time.monotonic() - start < 2

        slow_body = _connect(base)
        slow_body.sendall(b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{\"query\"")
        answer = _read_response(slow_body)
        assert answer.startswith("HTTP/1.1 408") and "did not arrive" in answer

        gone = _connect(base)
        gone.sendall(b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"q")
        gone.close()
        malformed = _connect(base)
        malformed.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = _read_all(malformed)
        assert answer.startswith("HTTP/1.1 400") and '{"error"' in answer
        assert post(base + PATH, one_row("A", " b", " c"))[0] == 200


def _read_all(sock: socket.socket) -> str:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data.decode()


def _read_response(sock: socket.socket) -> str:
    """One response, headers and the body its content-length announces (they may come in two segments)."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(4096)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length and (chunk := sock.recv(4096)):
        body += chunk
    return (head + b"\r\n\r\n" + body).decode()


def _readable(sock: socket.socket) -> bool:
    import select
    return bool(select.select([sock], [], [], 0)[0])


def test_no_demo_std_for_one_reward_and_a_clear_error_for_a_wrong_one():
    from rcfd.errors import RcfdError
    from rcfd.integrations.trl import RCfDReward

    with pytest.raises(RcfdError, match="demo_std needs"):
        RCfDReward([words, letters], demo_std=[1.0, 0.0])
    with pytest.raises(RcfdError, match="demo_std needs"):
        RCfDReward([words], demo_std=[1.0], objective="rcfd-batch")


def test_a_secret_named_by_an_unset_variable_is_refused_before_loading_anything(monkeypatch, capsys):
    from rcfd.cli import main

    monkeypatch.delenv("RCFD_TEST_SECRET", raising=False)
    assert main(["serve", "--task", "tiny", "--secret-env", "RCFD_TEST_SECRET"]) != 0
    err = capsys.readouterr().err
    assert "--secret-env RCFD_TEST_SECRET" in err and "unset or empty" in err and len(err.strip().splitlines()) == 1


def test_a_repeated_log_line_is_written_once_per_period():
    """Out of descriptors, the accept loop logs one error per connection attempt: one line per 10 s stays."""
    import logging

    from rcfd.integrations.serve_app import _OncePer

    once = _OncePer(seconds=10)
    records = [logging.LogRecord("asyncio", logging.ERROR, "", 0, "socket.accept() out of system resource",
                                 None, None) for _ in range(1000)]
    assert sum(once.filter(r) for r in records) == 1
    other = logging.LogRecord("asyncio", logging.ERROR, "", 0, "something else", None, None)
    assert once.filter(other)
