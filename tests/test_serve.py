"""`rcfd serve`: OpenRLHF-shaped requests over real HTTP, the same rewards as the Python RCfDReward."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rcfd.config import load_config
from rcfd_testing import TINY
from rcfd.integrations.serve import BadRequest, RewardService

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
        return reward_from_config(load_config(TINY, [REWARDS]), progress=False)
    finally:
        sys.path.remove(HELPERS)


def expected(reward, body: dict) -> list[float]:
    responses = [q[len(p):] for q, p in zip(body["query"], body["prompts"])]
    return reward(prompts=body["prompts"], completions=responses, demonstration=body["labels"])


@pytest.mark.slow  # a server subprocess (~20 s to start); the parsing checks below stay in the fast suite
def test_served_rewards_equal_the_python_reward_function_under_concurrent_clients(server, python_reward):
    _, base = server
    url = base + "/get_reward"
    status, answer = post(url, request(0))
    assert status == 200 and answer["rewards"] == answer["scores"]
    assert answer["rewards"] == pytest.approx(expected(python_reward, request(0)), abs=1e-4)
    wanted = {i: expected(python_reward, request(i)) for i in range(len(PROMPTS))}

    def client(c: int) -> list[bool]:
        ok = []
        for j in range(50):
            i = (c + j) % len(PROMPTS)
            status, answer = post(url, request(i))
            ok.append(status == 200 and answer["rewards"] == pytest.approx(wanted[i], abs=1e-4))
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
    ({"query": ["A NaN", "A b"], "prompts": ["A", "A"], "labels": [" x", " y"]}, 500, "not finite"),
])
def test_bad_requests_get_a_one_line_reason_and_the_server_keeps_serving(server, python_reward, body, status,
                                                                          reason):
    _, base = server
    got, answer = post(base + "/get_reward", body)
    assert got == status and reason in answer["error"] and "\n" not in answer["error"]
    ok, answer = post(base + "/get_reward", request(1))  # still serving
    assert ok == 200 and answer["rewards"] == pytest.approx(expected(python_reward, request(1)), abs=1e-4)


@pytest.mark.slow  # a server subprocess (~20 s to start); the parsing checks below stay in the fast suite
def test_ctrl_c_stops_the_server_cleanly(server):
    """Runs alone as well as after the others: it serves one request of its own first."""
    proc, base = server
    assert post(base + "/get_reward", request(0))[0] == 200
    with urllib.request.urlopen(base + "/health", timeout=5) as resp:
        health = json.loads(resp.read())
    assert health["rewards"] == ["loglik", "words_or_nan"] and health["requests"] > 0
    proc.send_signal(signal.SIGINT)
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
