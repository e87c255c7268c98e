"""``rcfd serve``'s HTTP side: ``POST /get_reward`` and ``GET /health`` over FastAPI and uvicorn, in front
of :class:`rcfd.integrations.serve.RewardService`.

Scheduling (:class:`Batcher`): requests that wait are scored together, off the event loop, in calls of
at most ``max_batch_tokens`` tokens (and ``max_batch_rows`` rows). Each call takes rows from every
waiting request in turn, one row each round, so a request never waits behind the whole of a larger one:
a request that arrives during a call is in the next call, whatever the others hold. Within a call rows
of similar length are padded together, so a long row pads no short one. Every row is at most
``max_row_tokens`` tokens (413 otherwise), which bounds the cost of a call.

Hostile or careless clients: the headers must arrive within ``header_timeout_s`` of the connection (or
of the last answer), the body within ``request_timeout_s``; a bad row fails its own request; every error
is ``{"error": "<one line>"}``; an optional shared secret (``--secret-env``) guards ``/get_reward``.
"""


import asyncio
import hmac
import ipaddress
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass, field

import torch

from ..errors import RcfdError
from .serve import PATH, BadRequest, RewardService, Rows, reward_from_config


@dataclass
class Job:
    """One request being scored: its pairs (responses, then uncached demonstrations) and their values."""
    rows: Rows
    prompts: list[str]
    texts: list[str]
    tokens: list[int]
    todo: list[int]
    future: asyncio.Future
    values: torch.Tensor | None = None
    picked: int = 0
    scored: int = 0
    failed: BadRequest | None = None
    result: dict | None = field(default=None)


class Batcher:
    """Fair, token-bounded batching of concurrent requests (the module's docstring states the bound)."""

    def __init__(self, service: RewardService, max_batch_tokens: int = 8192, max_batch_rows: int = 256,
                 batch_wait_ms: float = 5.0):
        if max_batch_tokens < service.max_row_tokens:
            raise RcfdError(f"--max-batch-tokens ({max_batch_tokens}) must be at least --max-row-tokens "
                            f"({service.max_row_tokens})")
        self.service = service
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_rows = max_batch_rows
        self.wait_s = batch_wait_ms / 1000
        self.queue: asyncio.Queue = asyncio.Queue()
        self.pending: list[Job] = []
        self.stopping = False

    async def submit(self, rows: Rows) -> dict:
        if self.stopping:
            raise BadRequest(503, "the server is shutting down; send the request again when it is back")
        prompts, texts, tokens, todo = self.service.work(rows)
        job = Job(rows, prompts, texts, tokens, todo, asyncio.get_running_loop().create_future(),
                  torch.full((len(texts), len(self.service.reward_names)), float("nan")))
        await self.queue.put(job)
        return await job.future

    def stop(self) -> None:
        """Answer every waiting request with a 503 now (the call being scored still finishes)."""
        self.stopping = True
        while not self.queue.empty():
            self._answer(self.queue.get_nowait(), BadRequest(503, "the server is shutting down; send the request again"))
        for job in self.pending:
            if job.picked == 0:
                self._answer(job, BadRequest(503, "the server is shutting down; send the request again"))

    def pick(self) -> list[tuple[Job, int]]:
        """Rows for the next call: one from each waiting request in turn, within the token budget."""
        picked, budget, progress = [], 0, True
        while progress and len(picked) < self.max_batch_rows:
            progress = False
            for job in self.pending:
                if job.picked < len(job.texts) and len(picked) < self.max_batch_rows:
                    cost = job.tokens[job.picked]
                    if picked and budget + cost > self.max_batch_tokens:
                        continue
                    picked.append((job, job.picked))
                    job.picked += 1
                    budget += cost
                    progress = True
        return picked

    def score(self, picked: list[tuple[Job, int]]) -> None:
        """Score a call's rows (in the executor); a failing call is retried request by request, so a
        row that breaks the reward fails its own request only. Finished requests get their result."""
        try:
            self._score_rows(picked)
        except Exception:  # noqa: BLE001 - find whose row it was
            for job in {id(j): j for j, _ in picked}.values():
                try:
                    self._score_rows([(j, i) for j, i in picked if j is job])
                except Exception as exc:  # noqa: BLE001 - the reward crashed on this request's rows
                    first = str(exc).splitlines()[0] if str(exc) else ""
                    job.failed = BadRequest(500, f"scoring failed: {type(exc).__name__}: {first}")
        for job in {id(j): j for j, _ in picked}.values():
            if job.failed is None and job.scored == len(job.texts):
                n = len(job.rows.prompts)
                try:
                    rewards = self.service.calibrate(job.rows, job.values[:n], job.todo, job.values[n:])
                    job.result = {"rewards": rewards, "scores": rewards,
                                  "extra_logs": self.service.extra_logs(job.rows, job.values[:n])}
                except BadRequest as exc:
                    job.failed = exc

    def _score_rows(self, picked: list[tuple[Job, int]]) -> None:
        values = self.service.base_rewards([j.prompts[i] for j, i in picked], [j.texts[i] for j, i in picked],
                                           [j.tokens[i] for j, i in picked])
        for (job, i), row in zip(picked, values):
            job.values[i] = row
            job.scored += 1

    def _answer(self, job: Job, outcome) -> None:
        if not job.future.done():  # else the client went away
            if isinstance(outcome, BadRequest):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)
        if job in self.pending:
            self.pending.remove(job)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.pending:
                self.pending.append(await self.queue.get())
                await asyncio.sleep(self.wait_s)  # company for the first call
            while not self.queue.empty():
                self.pending.append(self.queue.get_nowait())
            for job in [j for j in self.pending if not j.texts]:  # an empty request
                self._answer(job, {"rewards": [], "scores": [], "extra_logs": {}})
            picked = self.pick()
            if picked:
                await loop.run_in_executor(None, self.score, picked)
            for job in list(self.pending):
                if job.failed is not None or job.result is not None:
                    self.service.requests += 1
                    self._answer(job, job.failed or job.result)
                elif self.stopping:
                    self._answer(job, BadRequest(503, "the server is shutting down; send the request again"))


def _authorized(request, secret: str) -> bool:
    given = request.headers.get("x-rcfd-secret") or request.query_params.get("secret") or ""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:]
    return hmac.compare_digest(given.encode(), secret.encode())


def error(status: int, reason: str):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": reason}, status_code=status)


def _answer_errors_in_json(app) -> None:
    """404, 405 and anything unforeseen in the shape of every other error."""
    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def crash(request, exc):
        return error(500, f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


async def _read_body(request, max_body_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise BadRequest(413, f"body of {declared} bytes is over the limit of {max_body_bytes}; split the batch")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body_bytes:
            raise BadRequest(413, f"body over the limit of {max_body_bytes} bytes; split the batch")
    return bytes(body)


def build_app(service: RewardService, *, max_body_bytes: int = 16 << 20, max_batch_tokens: int = 8192,
              max_batch_rows: int = 256, batch_wait_ms: float = 5.0, request_timeout_s: float = 30.0,
              secret: str | None = None):
    """The FastAPI application; ``app.state.batcher`` is its scheduler."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import Response
    from starlette.requests import ClientDisconnect

    batcher = Batcher(service, max_batch_tokens, max_batch_rows, batch_wait_ms)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(batcher.run())
        yield
        batcher.stop()
        task.cancel()

    app = FastAPI(title="rcfd reward server", lifespan=lifespan)
    app.state.batcher = batcher

    _answer_errors_in_json(app)

    @app.post(PATH)
    async def get_reward(request: Request):
        if secret is not None and not _authorized(request, secret):
            return error(401, "missing or wrong shared secret: send the header 'Authorization: Bearer <secret>' "
                              "(or X-RCfD-Secret, or ?secret= in the URL)")
        try:
            body = await asyncio.wait_for(_read_body(request, max_body_bytes), request_timeout_s)
            rows = await asyncio.get_running_loop().run_in_executor(None, service.parse, body)
            return await batcher.submit(rows)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        except asyncio.TimeoutError:
            return error(408, f"the body did not arrive within {request_timeout_s:g} s")
        except ClientDisconnect:
            return Response(status_code=499)  # nobody is there to read it

    @app.get("/health")
    async def health():
        std = service.reward.demo_std
        return {"status": "ok", "rewards": service.reward_names, "labels": service.labels,
                "demo_std": None if std is None else std.tolist(), "max_row_tokens": service.max_row_tokens,
                "max_batch_tokens": max_batch_tokens, "requests": service.requests,
                "uptime_s": round(time.time() - started, 1)}

    return app


def guarded_protocol(header_timeout_s: float):
    """uvicorn's h11 protocol, closing a connection whose request headers do not arrive within
    ``header_timeout_s`` (uvicorn's own keep-alive timer restarts with every byte, so a client trickling
    bytes would hold its connection forever), and answering malformed HTTP with JSON."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _deadline = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self):
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc):
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self):
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(header_timeout_s, self._expire)

        def _expire(self):
            waiting = self.cycle is None or self.cycle.response_complete  # no request under way
            if waiting and not self.transport.is_closing():
                self.transport.close()

        def send_400_response(self, msg: str) -> None:
            body = json.dumps({"error": msg}).encode()
            for event in (h11.Response(status_code=400, headers=[(b"content-type", b"application/json"),
                                                                  (b"connection", b"close")]),
                          h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self.transport.close()

    return GuardedH11Protocol


class _OncePer(logging.Filter):
    """Let one record of a kind through per ``seconds`` (a descriptor shortage repeats one error)."""

    def __init__(self, seconds: float = 10.0):
        super().__init__()
        self.seconds, self.last = seconds, {}

    def filter(self, record) -> bool:
        key = (record.name, str(record.msg)[:80])
        now = time.monotonic()
        if now - self.last.get(key, -self.seconds) < self.seconds:
            return False
        self.last[key] = now
        return True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Stopped(Exception):
    pass


def _stop(signum, frame):
    raise _Stopped  # uvicorn raises the signal it caught again once it has shut down


def serve(config, *, host: str = "127.0.0.1", port: int = 5000, labels: str = "text", cache_file=None,
          max_body_mb: float = 16, max_row_tokens: int = 1024, max_batch_tokens: int = 8192,
          max_batch_rows: int = 256, batch_wait_ms: float = 5.0, request_timeout_s: float = 30.0,
          header_timeout_s: float = 10.0, secret: str | None = None, progress: bool = True) -> None:
    """Load the rewards, then serve until Ctrl-C or SIGTERM; waiting requests then get a 503."""
    try:
        import uvicorn
    except ImportError:
        raise RcfdError("rcfd serve needs FastAPI and uvicorn: pip install 'rcfd[serve]'") from None
    reward, tokenizer = reward_from_config(config, cache_file, progress)
    service = RewardService(reward, labels=labels, tokenizer=tokenizer, max_row_tokens=max_row_tokens)
    app = build_app(service, max_body_bytes=int(max_body_mb * (1 << 20)), max_batch_tokens=max_batch_tokens,
                    max_batch_rows=max_batch_rows, batch_wait_ms=batch_wait_ms, request_timeout_s=request_timeout_s,
                    secret=secret)
    batcher = app.state.batcher

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if not self.should_exit:
                asyncio.get_event_loop().call_soon_threadsafe(batcher.stop)
            super().handle_exit(sig, frame)

    for name in ("asyncio", "uvicorn.error"):
        logging.getLogger(name).addFilter(_OncePer())
    if not is_loopback(host) and secret is None:
        print(f"rcfd serve: warning: listening on {host} without a shared secret: anyone who reaches this port "
              f"can use it (set one with --secret-env)", file=sys.stderr, flush=True)
    print(f"rcfd serve: RCfD over {', '.join(service.reward_names)} at http://{host}:{port}{PATH} (OpenRLHF "
          f"v0.10.2+: --reward.remote_url, earlier: --remote_rm_url); Ctrl-C stops", flush=True)
    # Graceful shutdown waits for the call being scored (bounded by max_batch_tokens), not forever.
    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=10,
                                   http=guarded_protocol(header_timeout_s)))
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.run()
    except (_Stopped, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"rcfd serve: stopped after {service.requests} requests", flush=True)
