"""``rcfd serve``'s reward service: requests in OpenRLHF's remote reward-model protocol parsed, checked
and scored, without HTTP (the HTTP side is :mod:`rcfd.integrations.serve_app`).

OpenRLHF posts ``{"query": [prompt + response, ...], "prompts": [prompt, ...], "labels": [label, ...]}``
(``openrlhf/utils/agent.py`` ``_fetch_rewards_via_http`` since v0.10.2, one rollout per request;
``openrlhf/utils/remote_rm_utils.py`` before, one batch per request) and reads ``"rewards"`` (``"scores"``
too, for dynamic filtering, and ``"extra_logs"``, logged per rollout). The answer is

    R_RCfD = −(R(x, y) − R(x, y_demo))²                       (one reward: the paper's)
    R_RCfD = −Σ_k ((R_k(x, y) − R_k(x, y_demo)) / σ_k)²       (K rewards; σ_k their demonstrations' std)

The paper whitens the K calibrated terms over the batch, which is undefined for OpenRLHF's one-row
requests and makes a row's reward depend on its company; the server measures each term in the training
demonstrations' reward std instead (``σ``, computed at start-up and shown by ``GET /health``), so a
row gets the same reward alone or in any batch. The response y is the query with its prompt cut off;
the label is the human demonstration (``--labels text``) or its precomputed reward (``--labels reward``).

Every row is checked before it is scored (valid Unicode, a non-empty prompt and demonstration, at most
``max_row_tokens`` tokens), so a bad row fails its own request only, with a 4xx and one line.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass

import torch

from ..config import reward_columns
from ..errors import RcfdError
from ..rewards.base import check_finite

PATH = "/get_reward"
FIELDS = ("query", "prompts", "labels")
CHARS_PER_TOKEN = 64  # no tokenizer's token spells more: longer rows are refused without tokenizing them
CHUNK_TOKENS = 2048  # padded tokens per scoring call: rows of similar length share one


class BadRequest(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


@dataclass
class Rows:
    """One request's rows: prompts, responses, demonstrations (text) or their rewards [N, K], and the
    token count of each row's prompt + response (and of its demonstration)."""
    prompts: list[str]
    responses: list[str]
    demonstrations: list[str] | None
    demo_rewards: torch.Tensor | None
    tokens: list[int]
    demo_tokens: list[int] | None = None


class RewardService:
    """Parsing and scoring of requests (what the HTTP endpoint and the tests share)."""

    def __init__(self, reward, labels: str = "text", tokenizer=None, max_rows: int = 4096,
                 max_row_tokens: int = 1024):
        if labels not in ("text", "reward"):
            raise RcfdError(f"--labels must be 'text' (the demonstration) or 'reward' (its reward), got '{labels}'")
        if max_row_tokens < 1:
            raise RcfdError(f"--max-row-tokens must be >= 1, got {max_row_tokens}")
        self.reward = reward  # an RCfDReward
        self.labels = labels
        # Its own copy: requests are parsed on one thread while the rewards tokenize on another, and a
        # fast tokenizer used by two threads at once fails ("Already borrowed").
        self.tokenizer = None if tokenizer is None else copy.deepcopy(tokenizer)
        self.max_rows = max_rows
        self.max_row_tokens = max_row_tokens
        self.requests = 0

    @property
    def reward_names(self) -> list[str]:
        return self.reward.stack.names

    # ------------------------------------------------------------------ parsing
    def parse(self, body: bytes) -> Rows:
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            what = "nested too deeply" if isinstance(exc, RecursionError) else f"not valid JSON ({exc})"
            raise BadRequest(400, f"the body is {what}") from None
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
        prompts, responses = [], []
        for i, (q, p) in enumerate(zip(data["query"], data["prompts"])):
            _check_text(q, i, "query")
            _check_text(p, i, "prompt")
            if not p:
                raise BadRequest(422, f"row {i}: the prompt is empty; send the prompt the response answers")
            if not q.startswith(p):
                raise BadRequest(422, f"row {i}: the query does not start with its prompt; send query = prompt + response")
            prompts.append(p)
            responses.append(q[len(p):])
        tokens = self._count_tokens(data["query"], "prompt + response")
        if self.labels == "reward":
            return Rows(prompts, responses, None, self._demo_rewards(data["labels"]), tokens)
        for i, label in enumerate(data["labels"]):
            if not isinstance(label, str):
                raise BadRequest(422, "labels must be the demonstrations' texts (strings); for precomputed "
                                      "demonstration rewards start the server with --labels reward")
            _check_text(label, i, "label")
            if not label.strip():
                raise BadRequest(422, f"row {i}: the demonstration (label) is empty; RCfD calibrates to it")
        demo_tokens = self._count_tokens([p + d for p, d in zip(prompts, data["labels"])], "prompt + demonstration")
        return Rows(prompts, responses, list(data["labels"]), None, tokens, demo_tokens)

    def _count_tokens(self, texts: list[str], what: str) -> list[int]:
        limit = self.max_row_tokens
        for i, text in enumerate(texts):
            if len(text) > limit * CHARS_PER_TOKEN:
                raise BadRequest(413, f"row {i}: {what} of {len(text)} characters is over --max-row-tokens {limit}; "
                                      f"truncate the rollout or restart the server with a larger limit")
        if self.tokenizer is None:
            counts = [len(t) for t in texts]  # no tokenizer (a reward without a model): characters
        else:
            counts = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
        for i, count in enumerate(counts):
            if count > limit:
                raise BadRequest(413, f"row {i}: {what} of {count} tokens is over --max-row-tokens {limit}; "
                                      f"truncate the rollout or restart the server with a larger limit")
        return counts

    def _demo_rewards(self, labels) -> torch.Tensor:
        k = len(self.reward_names)
        rows = []
        for i, label in enumerate(labels):
            try:
                value = json.loads(label) if isinstance(label, str) else label
                row = value if isinstance(value, list) else [value]
                if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in row):
                    raise TypeError
                row = [float(v) for v in row]
            except (TypeError, ValueError, RecursionError):
                raise BadRequest(422, f"row {i}: label {label!r} is not a demonstration reward (a number, or a "
                                      f"list of {k} numbers)") from None
            if len(row) != k or not all(math.isfinite(v) for v in row):
                raise BadRequest(422, f"row {i}: label {label!r} must hold {k} finite number(s), one per reward "
                                      f"({', '.join(self.reward_names)})")
            rows.append(row)
        return torch.tensor(rows, dtype=torch.float32, device="cpu").reshape(len(labels), k)

    # ------------------------------------------------------------------ scoring
    def base_rewards(self, prompts: list[str], texts: list[str], tokens: list[int]) -> torch.Tensor:
        """R [N, K] of (prompt, text) pairs, scored in chunks of similar length so that a short row is
        padded only to its chunk's longest (at most ``CHUNK_TOKENS`` padded tokens a chunk)."""
        order = sorted(range(len(prompts)), key=lambda i: tokens[i])
        out = torch.zeros(len(prompts), len(self.reward_names), device="cpu")
        chunk: list[int] = []
        for i in order + [None]:
            if chunk and (i is None or (len(chunk) + 1) * tokens[i] > CHUNK_TOKENS):
                out[chunk] = self.reward.stack([prompts[j] for j in chunk], [texts[j] for j in chunk])
                chunk = []
            if i is not None:
                chunk.append(i)
        return out

    def work(self, rows: Rows) -> tuple[list[str], list[str], list[int], list[int]]:
        """A request's pairs to score: its N responses, then its demonstrations not yet cached (their rows
        last): (prompts, texts, tokens, rows of the demonstrations)."""
        todo = [] if rows.demonstrations is None else self.reward.uncached(rows.prompts, rows.demonstrations)
        return (rows.prompts + [rows.prompts[i] for i in todo], rows.responses + [rows.demonstrations[i] for i in todo],
                rows.tokens + [rows.demo_tokens[i] for i in todo], todo)

    def calibrate(self, rows: Rows, values: torch.Tensor, todo: list[int], demo_values: torch.Tensor) -> list[float]:
        """One request's RCfD rewards from its responses' base rewards [N, K] and those of its demonstrations
        that were not cached (rows ``todo``, [len(todo), K])."""
        try:
            check_finite(values, "the reward")
        except RcfdError as exc:
            raise BadRequest(500, str(exc).splitlines()[0]) from None
        if rows.demo_rewards is not None:
            demo = rows.demo_rewards
        else:
            if todo:
                try:
                    self.reward.remember([rows.prompts[i] for i in todo], [rows.demonstrations[i] for i in todo],
                                         demo_values)
                except RcfdError as exc:
                    raise BadRequest(422, str(exc).splitlines()[0]) from None
            demo = self.reward.demo_rewards(rows.prompts, rows.demonstrations)
        result = self.reward.calibrate(rows.prompts, values, demo) if rows.prompts else torch.zeros(0)
        bad = (~torch.isfinite(result)).nonzero().flatten().tolist()
        if bad:
            raise BadRequest(422, f"row {bad[0]}: the calibrated reward overflows (a demonstration reward far "
                                  f"outside the reward's range?)")
        return result.tolist()

    def extra_logs(self, rows: Rows, values: torch.Tensor) -> dict[str, list[float]]:
        """Per-row base rewards, what OpenRLHF logs beside the reward (``extra_logs``)."""
        return {f"rcfd/{name}": values[:, k].tolist() for k, name in enumerate(self.reward_names)}


def _check_text(value, row: int, field: str) -> None:
    if not isinstance(value, str):
        raise BadRequest(422, f"row {row}: the {field} must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(422, f"row {row}: the {field} is not valid Unicode (a lone surrogate such as \\ud800?)") from None


def reward_from_config(config, cache_file=None, progress: bool = True):
    """(RCfDReward over the base rewards of ``config`` (reward.names and reward.calibrate_also, with its
    model for loglik), the tokenizer). With K > 1 rewards the calibrated terms are measured in the
    training demonstrations' reward std (the module's docstring says why)."""
    from .trl import RCfDReward
    from ..data import build_datasets
    from ..models import load_policy
    from ..rewards import build_rewards
    from ..rewards.demo_cache import demo_rewards

    c = config
    if c.train.threads:
        torch.set_num_threads(c.train.threads)
    policy, tokenizer, reference = load_policy(c.model)
    policy.eval()
    stack = build_rewards(reward_columns(c), policy=policy, reference=reference, tokenizer=tokenizer,
                          model_id=c.model.name, config=c.reward, progress=progress)
    demo_std = None
    if len(stack.rewards) > 1:
        train, _ = build_datasets(c.data, tokenizer)
        values = demo_rewards(stack, train, tokenizer, c.generation.max_new_tokens, progress=progress)
        demo_std = values.std(0, unbiased=False)
        flat = [name for name, s in zip(stack.names, demo_std.tolist()) if not s > 0]
        if flat:
            raise RcfdError(f"reward '{flat[0]}' has the same value on every training demonstration, so a "
                            f"calibrated term cannot be measured in its std; serve it alone or drop it")
    return RCfDReward(stack.rewards, cache_file=cache_file, demo_std=demo_std), tokenizer
