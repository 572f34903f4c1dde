"""Async teacher client on the official `openai` SDK for any OpenAI-compatible endpoint.

Bounded concurrency (a semaphore), our own retry loop (the SDK's is switched off so every
attempt is counted): 429 honours Retry-After / retry-after-ms, 429/5xx/timeouts/connection
errors/malformed bodies back off exponentially with jitter; 401/403/404 abort the stage
(every request would fail the same way). Answers go through the response cache first.
The API key is read from the environment here and handed only to the SDK.
"""
from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from .cache import ResponseCache, cache_key
from .config import EnrichConfig

log = logging.getLogger(__name__)


class TeacherError(RuntimeError):
    """The endpoint cannot serve this stage at all (auth, wrong URL/model, missing key)."""


@dataclass
class Answer:
    content: str | None
    error: str | None = None     # set when the request failed after all transport retries
    cached: bool = False


@dataclass
class Usage:
    """Requests, retries, cache hits and tokens for usage.json (fresh requests only are billed)."""

    model: str = ""
    requests: int = 0                 # HTTP attempts sent
    responses: int = 0                # answers received and cached
    cache_hits: int = 0
    failed_requests: int = 0          # calls that gave up after max_retries
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0     # tokens of answers served from the cache (not paid again)
    cached_completion_tokens: int = 0
    errors: Counter = field(default_factory=Counter)

    def add_tokens(self, usage: dict, cached: bool) -> None:
        p, c = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        if cached:
            self.cached_prompt_tokens += p
            self.cached_completion_tokens += c
        else:
            self.prompt_tokens += p
            self.completion_tokens += c

    def to_dict(self, prices: dict) -> dict:
        price = prices.get(self.model)
        cost = saved = 0.0
        if price is not None:
            cost = (self.prompt_tokens * price.input_per_1m + self.completion_tokens * price.output_per_1m) / 1e6
            saved = (self.cached_prompt_tokens * price.input_per_1m
                     + self.cached_completion_tokens * price.output_per_1m) / 1e6
        return {"model": self.model, "requests": self.requests, "responses": self.responses,
                "cache_hits": self.cache_hits, "failed_requests": self.failed_requests,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "cached_prompt_tokens": self.cached_prompt_tokens,
                "cached_completion_tokens": self.cached_completion_tokens,
                "cost_usd": round(cost, 6), "cache_saved_usd": round(saved, 6),
                "price_known": price is not None,
                "price": price.model_dump() if price is not None else None,
                "errors": dict(sorted(self.errors.items()))}


def api_key_from_env(env_name: str) -> str:
    if not env_name:
        return "EMPTY"  # endpoints without auth (a local vLLM server) still need a non-empty value
    key = os.environ.get(env_name, "")
    if not key:
        raise TeacherError(f"teacher API key: environment variable {env_name} is not set "
                           "(set it, or set enrich.api_key_env to '' for an endpoint without auth)")
    return key


def request_params(config: EnrichConfig) -> dict:
    """The sampling parameters that are part of the cache key."""
    return {"temperature": config.temperature, "top_p": config.top_p, "max_tokens": config.max_tokens}


def retry_after_s(headers) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None


class TeacherClient:
    def __init__(self, config: EnrichConfig, cache: ResponseCache, usage: Usage | None = None):
        self.config = config
        self.cache = cache
        self.usage = usage or Usage(model=config.model)
        self.params = request_params(config)
        self._sem = asyncio.Semaphore(config.concurrency)
        self._rng = random.Random(config.seed)
        self._inflight: dict[str, asyncio.Future] = {}  # identical prompts in flight share one request
        self._sdk_client = None

    @property
    def _sdk(self):
        """Built at the first uncached request: a rerun served from the cache needs no key."""
        if self._sdk_client is None:
            from openai import AsyncOpenAI

            self._sdk_client = AsyncOpenAI(base_url=self.config.base_url, api_key=api_key_from_env(self.config.api_key_env),
                                           max_retries=0, timeout=self.config.request_timeout_s)
        return self._sdk_client

    async def close(self) -> None:
        if self._sdk_client is not None:
            await self._sdk_client.close()

    def backoff_s(self, attempt: int, retry_after: float | None) -> float:
        cfg = self.config
        if retry_after is not None:  # the server said when; jitter only upwards so we never come early
            return min(retry_after, cfg.backoff_max_s) + self._rng.uniform(0, 0.1 * cfg.backoff_base_s)
        span = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** attempt)
        return span / 2 + self._rng.uniform(0, span / 2)  # "equal jitter": spread out, never zero

    async def complete(self, messages: list[dict]) -> Answer:
        key = cache_key(self.config.model, messages, self.params)
        hit = self.cache.get(key)
        if hit is not None:
            self.usage.cache_hits += 1
            self.usage.add_tokens(hit.get("usage") or {}, cached=True)
            return Answer(hit["content"], cached=True)
        if key in self._inflight:  # e.g. two items with identical metadata: pay once
            answer = await asyncio.shield(self._inflight[key])
            self.usage.cache_hits += 1
            return Answer(answer.content, answer.error, cached=True)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            answer = await self._fetch(key, messages)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        finally:
            self._inflight.pop(key, None)
        fut.set_result(answer)
        return answer

    async def _fetch(self, key: str, messages: list[dict]) -> Answer:
        last = "no attempt"
        for attempt in range(self.config.max_retries + 1):
            kind, detail, wait_hint = await self._attempt(key, messages)
            if kind == "ok":
                return Answer(detail)
            if kind == "fail":  # not retryable for this request (e.g. 400 context too long)
                last = detail
                break
            last = detail
            if attempt < self.config.max_retries:
                await asyncio.sleep(self.backoff_s(attempt, wait_hint))
        self.usage.failed_requests += 1
        return Answer(None, error=f"request failed after {attempt + 1} attempt(s): {last}")

    async def _attempt(self, key: str, messages: list[dict]) -> tuple[str, str | None, float | None]:
        """One HTTP attempt: ("ok", content, None) | ("retry", reason, retry_after) | ("fail", reason, None)."""
        import openai
        from openai.types.chat import ChatCompletion

        async with self._sem:
            self.usage.requests += 1
            try:
                # The SDK's low-level post (same transport, errors, timeouts as `chat.completions.create`)
                # skips `create`'s recursive typed-dict transform of the messages: ~6 ms CPU per request,
                # which caps a 2-core client below the endpoint's concurrency.
                resp = await self._sdk.post("/chat/completions", cast_to=ChatCompletion,
                                            body={"model": self.config.model, "messages": messages, **self.params})
            except openai.RateLimitError as exc:
                self.usage.errors["rate_limited"] += 1
                return "retry", "HTTP 429 rate limited", retry_after_s(exc.response.headers)
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
                raise TeacherError(f"teacher endpoint {self.config.base_url} (model {self.config.model!r}) "
                                   f"refused the request: HTTP {exc.status_code}") from None
            except openai.APITimeoutError:
                self.usage.errors["timeout"] += 1
                return "retry", f"timed out after {self.config.request_timeout_s} s", None
            except openai.APIConnectionError as exc:
                self.usage.errors["connection"] += 1
                return "retry", f"connection error ({type(exc.__cause__ or exc).__name__})", None
            except openai.APIStatusError as exc:
                code = exc.status_code
                if code >= 500 or code in (408, 409):
                    self.usage.errors[f"http_{code}"] += 1
                    return "retry", f"HTTP {code}", retry_after_s(exc.response.headers)
                self.usage.errors[f"http_{code}"] += 1
                return "fail", f"HTTP {code}: {str(exc)[:200]}", None
            except (openai.APIResponseValidationError, ValueError) as exc:  # body is not the JSON we expect
                self.usage.errors["malformed"] += 1
                return "retry", f"malformed response ({type(exc).__name__})", None
        choices = getattr(resp, "choices", None)
        content = choices[0].message.content if choices and choices[0].message else None
        if not isinstance(content, str):
            self.usage.errors["malformed"] += 1
            return "retry", "malformed response (no choices[0].message.content)", None
        usage = {"prompt_tokens": getattr(resp.usage, "prompt_tokens", 0) or 0,
                 "completion_tokens": getattr(resp.usage, "completion_tokens", 0) or 0} if resp.usage else {}
        self.cache.put(key, content, choices[0].finish_reason, usage)
        self.usage.responses += 1
        self.usage.add_tokens(usage, cached=False)
        return "ok", content, None
