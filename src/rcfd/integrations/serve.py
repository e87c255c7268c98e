"""``rcfd serve``: RCfD rewards over HTTP, in OpenRLHF's remote reward-model protocol.

OpenRLHF (``--remote_rm_url http://HOST:PORT/get_reward``) posts, per batch of rollouts, the JSON body
``{"query": [prompt + response, ...], "prompts": [prompt, ...], "labels": [label, ...]}`` and reads
the list under ``"rewards"`` of the JSON answer (``openrlhf/utils/remote_rm_utils.py``:
``remote_rm_fn`` / ``request_api_wrapper``, ``score_key="rewards"``; the ``labels`` are the dataset's
``--label_key`` column). This service answers ``{"rewards": [...], "scores": [...]}`` (the same
values twice: newer OpenRLHF versions read ``scores`` too) with

    R_RCfD = −(R(x, y) − R(x, y_demo))²   (K rewards: each calibrated term whitened over the request, summed)

computed by :class:`rcfd.integrations.trl.RCfDReward`, so a request gets exactly what the Python reward
function returns for the same rows. The response y is the query with its prompt cut off; the label is
the human demonstration (``--labels text``, its rewards computed once and cached) or its precomputed
reward (``--labels reward``: a number, or a list of K numbers).

Concurrent requests are merged into one scoring batch (up to ``max_batch_rows`` rows, waiting at most
``batch_wait_ms`` for company) and scored off the event loop, so the server keeps accepting while a
batch is scored. Every bad request gets a 4xx (a 5xx if the reward itself fails) with one line under
``"error"``, and the server keeps serving. ``GET /health`` says whether it is up and what it serves.
"""

import asyncio
import json
import math
import time
from dataclasses import dataclass

import torch

from ..config import reward_columns
from ..errors import RcfdError
from ..train.objectives import rcfd
from ..rewards.base import check_finite

PATH = "/get_reward"
FIELDS = ("query", "prompts", "labels")


class BadRequest(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


@dataclass
class Rows:
    """One request's rows: prompts, responses, and demonstrations (text) or their rewards [N, K]."""
    prompts: list[str]
    responses: list[str]
    demonstrations: list[str] | None
    demo_rewards: torch.Tensor | None


class RewardService:
    """Parsing and scoring, without HTTP (what the endpoint and its tests share)."""

    def __init__(self, reward, labels: str = "text", max_rows: int = 4096):
        if labels not in ("text", "reward"):
            raise RcfdError(f"--labels must be 'text' (the demonstration) or 'reward' (its reward), got '{labels}'")
        self.reward = reward  # an RCfDReward
        self.labels = labels
        self.max_rows = max_rows
        self.requests = 0

    @property
    def reward_names(self) -> list[str]:
        return self.reward.stack.names

    def parse(self, body: bytes) -> Rows:
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(400, f"the body is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise BadRequest(400, 'the body must be a JSON object {"query": [...], "prompts": [...], "labels": [...]}')
        missing = [f for f in FIELDS if f not in data]
        if missing:
            raise BadRequest(422, f"missing field '{missing[0]}'; send query, prompts and labels (lists of equal length)")
        for f in FIELDS:
            if not isinstance(data[f], list):
                raise BadRequest(422, f"'{f}' must be a list, got {type(data[f]).__name__}")
        n = len(data["query"])
        if len(data["prompts"]) != n or len(data["labels"]) != n:
            raise BadRequest(422, f"query, prompts and labels must have the same length "
                                  f"(got {n}, {len(data['prompts'])}, {len(data['labels'])})")
        if n > self.max_rows:
            raise BadRequest(413, f"{n} rows in one request; send at most {self.max_rows} (split the batch)")
        responses = []
        for i, (q, p) in enumerate(zip(data["query"], data["prompts"])):
            if not isinstance(q, str) or not isinstance(p, str):
                raise BadRequest(422, f"row {i}: query and prompt must be strings")
            if not q.startswith(p):
                raise BadRequest(422, f"row {i}: the query does not start with its prompt; send query = prompt + response")
            responses.append(q[len(p):])
        if self.labels == "text":
            if not all(isinstance(label, str) for label in data["labels"]):
                raise BadRequest(422, "labels must be the demonstrations' texts (strings); for precomputed "
                                      "demonstration rewards start the server with --labels reward")
            return Rows(list(data["prompts"]), responses, list(data["labels"]), None)
        return Rows(list(data["prompts"]), responses, None, self._demo_rewards(data["labels"]))

    def _demo_rewards(self, labels) -> torch.Tensor:
        k = len(self.reward_names)
        rows = []
        for i, label in enumerate(labels):
            try:
                value = json.loads(label) if isinstance(label, str) else label
                row = [float(v) for v in (value if isinstance(value, list) else [value])]
            except (TypeError, ValueError):
                raise BadRequest(422, f"row {i}: label {label!r} is not a demonstration reward (a number, or a "
                                      f"list of {k} numbers)") from None
            if len(row) != k or not all(math.isfinite(v) for v in row):
                raise BadRequest(422, f"row {i}: label {label!r} must hold {k} finite number(s), one per reward "
                                      f"({', '.join(self.reward_names)})")
            rows.append(row)
        return torch.tensor(rows, dtype=torch.float32, device="cpu").reshape(len(labels), k)

    def score(self, requests: list[Rows]) -> list[list[float] | BadRequest]:
        """RCfD rewards per request: the base rewards of all rows in one pass, then each request's own
        calibration (K > 1 whitens over the request, as the reward function does over its batch)."""
        prompts = [p for r in requests for p in r.prompts]
        responses = [c for r in requests for c in r.responses]
        values = self.reward.stack(prompts, responses) if prompts else torch.zeros(0, len(self.reward_names), device="cpu")
        out, start = [], 0
        for r in requests:
            n = len(r.prompts)
            mine, start = values[start:start + n], start + n
            try:
                check_finite(mine, "the reward")
                # Finite already: parse() checks precomputed labels, RCfDReward.demo_rewards what it computes.
                demo = r.demo_rewards if r.demo_rewards is not None else self.reward.demo_rewards(r.prompts,
                                                                                                 r.demonstrations)
                out.append(rcfd(mine, demo).tolist() if n else [])
            except RcfdError as exc:
                out.append(BadRequest(500, str(exc).splitlines()[0]))
        self.requests += len(requests)
        return out


class Batcher:
    """Merge requests that arrive together into one scoring call, run off the event loop."""

    def __init__(self, service: RewardService, max_batch_rows: int = 256, batch_wait_ms: float = 5.0):
        self.service = service
        self.max_batch_rows = max_batch_rows
        self.wait_s = batch_wait_ms / 1000
        self.queue: asyncio.Queue = asyncio.Queue()

    async def submit(self, rows: Rows) -> list[float]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((rows, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size = len(batch[0][0].prompts)
            deadline = loop.time() + self.wait_s
            while size < self.max_batch_rows and (left := deadline - loop.time()) > 0:
                try:
                    item = await asyncio.wait_for(self.queue.get(), left)
                except asyncio.TimeoutError:
                    break
                batch.append(item)
                size += len(item[0].prompts)
            try:
                results = await loop.run_in_executor(None, self.service.score, [rows for rows, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the reward crashed: every waiting request is told why
                first = str(exc).splitlines()[0] if str(exc) else ""
                results = [BadRequest(500, f"scoring failed: {type(exc).__name__}: {first}")] * len(batch)
            for (_, future), result in zip(batch, results):
                if future.done():  # the client went away
                    continue
                if isinstance(result, BadRequest):
                    future.set_exception(result)
                else:
                    future.set_result(result)


def build_app(service: RewardService, *, max_body_bytes: int = 16 << 20, max_batch_rows: int = 256,
              batch_wait_ms: float = 5.0):
    """The FastAPI application: ``POST /get_reward`` and ``GET /health``."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    batcher = Batcher(service, max_batch_rows, batch_wait_ms)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()

    app = FastAPI(title="rcfd reward server", lifespan=lifespan)

    def error(status: int, reason: str) -> JSONResponse:
        return JSONResponse({"error": reason}, status_code=status)

    @app.post(PATH)
    async def get_reward(request: Request):
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return error(413, f"body of {declared} bytes is over the limit of {max_body_bytes}; split the batch")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                return error(413, f"body over the limit of {max_body_bytes} bytes; split the batch")
        try:
            rows = service.parse(body)
            rewards = await batcher.submit(rows)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        return {"rewards": rewards, "scores": rewards}

    @app.get("/health")
    async def health():
        return {"status": "ok", "rewards": service.reward_names, "labels": service.labels,
                "requests": service.requests, "uptime_s": round(time.time() - started, 1)}

    return app


def reward_from_config(config, cache_file=None, progress: bool = True):
    """An RCfDReward over the base rewards of ``config`` (reward.names and reward.calibrate_also, with its
    model for loglik)."""
    from .trl import RCfDReward
    from ..models import load_policy
    from ..rewards import build_rewards

    c = config
    if c.train.threads:
        torch.set_num_threads(c.train.threads)
    policy, tokenizer, reference = load_policy(c.model)
    policy.eval()
    stack = build_rewards(reward_columns(c), policy=policy, reference=reference, tokenizer=tokenizer,
                          model_id=c.model.name, config=c.reward, progress=progress)
    return RCfDReward(stack.rewards, cache_file=cache_file)


def serve(config, *, host: str = "127.0.0.1", port: int = 5000, labels: str = "text", cache_file=None,
          max_body_mb: float = 16, max_batch_rows: int = 256, batch_wait_ms: float = 5.0, progress: bool = True):
    """Load the rewards, then serve until Ctrl-C (uvicorn shuts down cleanly on SIGINT/SIGTERM)."""
    try:
        import uvicorn
    except ImportError:
        raise RcfdError("rcfd serve needs FastAPI and uvicorn: pip install 'rcfd[serve]'") from None
    service = RewardService(reward_from_config(config, cache_file, progress), labels=labels)
    app = build_app(service, max_body_bytes=int(max_body_mb * (1 << 20)), max_batch_rows=max_batch_rows,
                    batch_wait_ms=batch_wait_ms)
    print(f"rcfd serve: RCfD over {', '.join(service.reward_names)} at http://{host}:{port}{PATH} "
          f"(OpenRLHF: --remote_rm_url http://{host}:{port}{PATH}); Ctrl-C stops", flush=True)
    # Graceful shutdown waits for requests in flight, but not forever (a client may have gone away).
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=10)
    print(f"rcfd serve: stopped after {service.requests} requests", flush=True)
