"""Enrichment stage settings (paper §3.2.3). Defaults follow the paper where it gives a value."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..config import StageConfig


class Price(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(extra="forbid")
    input_per_1m: float = Field(0.0, ge=0)
    output_per_1m: float = Field(0.0, ge=0)


# Public list prices (USD / 1M tokens) of the paper's teacher; anything else costs 0 unless configured.
DEFAULT_PRICES = {"gpt-4o-mini": Price(input_per_1m=0.15, output_per_1m=0.60)}


class EnrichConfig(StageConfig):
    """Teacher enrichment. The API key is read from the environment variable named by
    `api_key_env` at request time; it is never a config value, so it cannot reach params
    or manifests."""

    teacher: Literal["offline", "openai"] = Field(
        "offline", description="offline: metadata templates + rule-based reasoning (no LLM); "
                               "openai: any OpenAI-compatible /v1/chat/completions endpoint")
    backend: Literal["async", "ray"] = Field(
        "async", description="async: asyncio client in this process; ray: Ray Data batch requests "
                             "(large catalogues; needs `ray[data]`)")
    base_url: str = Field("https://api.openai.com/v1", description="endpoint base URL (…/v1)")
    model: str = Field("gpt-4o-mini", description="teacher model name (paper: GPT-4o-mini)")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key; "
                                                             "'' for endpoints without auth (e.g. a local vLLM)")
    prompt_version: Literal["v1"] = Field("v1", description="version of the four teacher prompts (paper §3.2.3, Appendix C)")

    # what to generate
    item_centric: bool = Field(True, description="item analysis + integration paragraphs (2 calls per item)")
    user_centric: bool = Field(True, description="user reasoning + narrative (2 calls per sample)")
    user_splits: list[Literal["train", "valid", "test"]] = Field(
        ["train"], description="splits whose samples get reasoning traces (training only by default: "
                               "the traces see the target)")
    max_items: int | None = Field(None, ge=1, description="cap on items (first N by item table order)")
    max_user_samples: int | None = Field(None, ge=1, description="cap on user samples (seeded random subset)")
    seed: int = Field(0, description="seed for the user-sample subset and the backoff jitter")
    max_description_chars: int = Field(1200, ge=0, description="descriptions are cut to this length in prompts")

    # request settings
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1, description="completion budget per request")
    concurrency: int = Field(32, ge=1, description="requests in flight at once")
    request_timeout_s: float = Field(120.0, gt=0, description="per-request timeout")
    max_retries: int = Field(6, ge=0, description="transport retries (429, 5xx, timeouts, malformed bodies) per request")
    backoff_base_s: float = Field(1.0, ge=0, description="exponential backoff base: base * 2^n, full jitter")
    backoff_max_s: float = Field(60.0, ge=0, description="backoff ceiling (a Retry-After header is honoured up to this)")
    max_attempts: int = Field(3, ge=1, description="validation tries per call; a failing answer is retried "
                                                   "with the reason appended, then the record is marked failed")

    # validation
    min_paragraph_sentences: int = Field(10, ge=1, description="item paragraph length (paper: >= 10 sentences)")
    offline_target_hint: bool = Field(
        True, description="offline reasoning may use the target's brand/product type to steer its open "
                          "ending, as the LLM teacher sees the target (never its title or SID)")

    # cache and cost
    cache_dir: str = Field("", description="resumable response cache (local dir); '' = '.<out>.enrich-cache' "
                                           "beside a local output, or under $SIDREASONER_CACHE for s3:// outputs. "
                                           "Copied into the artifact's cache/ at the end")
    state_flush_answers: int = Field(20, ge=1, description="with a persistent step state ($SIDREASONER_STATE_URI and a "
                                     "pipeline run id): new answers are saved there every this many answers ...")
    state_flush_s: float = Field(10.0, gt=0, description="... or this many seconds, whichever comes first, so a "
                                 "retried pod pays again for at most these (none after a SIGTERM: it flushes)")
    prices: dict[str, Price] = Field(default_factory=lambda: dict(DEFAULT_PRICES),
                                     description="model -> USD per 1M input/output tokens, for usage.json")
    ray_engine: Literal["http", "vllm"] = Field(
        "http", description="ray backend: 'http' batches requests to base_url; 'vllm' runs `model` (a local dir or "
                            "Hub id) in vLLM engine actors on the Ray cluster's GPUs, or its CPUs without GPUs (needs vllm)")
    vllm_engine_kwargs: dict = Field(default_factory=dict, description="ray+vllm: vLLM engine kwargs "
                                                                       "(e.g. max_model_len, tensor_parallel_size)")
    ray_concurrency: int = Field(1, ge=1, description="ray backend: HTTP workers or vLLM engine replicas")
    ray_batch_size: int = Field(16, ge=1, description="ray backend: rows per batch")
    ray_qps: int | None = Field(None, ge=1, description="ray backend: request rate limit per worker")
