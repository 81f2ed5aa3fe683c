"""Gateway configuration: one pydantic-settings object, built by the caller and passed to ``create_app``.

Every field can come from the environment (``FLOTILLA_GATEWAY_<FIELD>``, lists and dicts as JSON) or from the
``flotilla gateway`` command line. Defaults are chosen for a small fleet of vLLM pods on one node pool; each
comment says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProfileConfig(BaseModel):
    """A routing profile: which filters, which weighted scorers and which picker (see docs/gateway.md)."""

    filters: list[str] = Field(default_factory=list)
    scorers: dict[str, float] = Field(default_factory=dict)
    picker: str = "max-score"
    #: plugin parameters by plugin name, e.g. {"kv-cost": {"overlap_weight": 1.0}}
    params: dict[str, dict[str, float]] = Field(default_factory=dict)


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOTILLA_GATEWAY_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8000

    # ------------------------------------------------------------------ discovery
    #: static engine base URLs (standalone mode), e.g. ["http://127.0.0.1:8001"]
    engines: list[str] = Field(default_factory=list)
    #: KV-event publisher URLs of the static engines, paired with ``engines`` by position (precise mode)
    kv_events: list[str] = Field(default_factory=list)
    #: YAML file with ``engines: [{url, model?, kv_events?}]`` (re-read on SIGHUP is not supported: restart)
    engines_file: Path | None = None
    #: watch engine pods in Kubernetes by the label contract (flotilla.labels)
    kubernetes: bool = False
    namespace: str | None = None
    kubeconfig: str | None = None
    #: extra label selector ANDed with ``flotilla.dev/component=engine``
    label_selector: str = ""

    # ------------------------------------------------------------------ routing
    #: profile used when neither the request header nor ``model_profiles`` names one
    default_profile: str = "default"
    #: model (or adapter) name -> profile name
    model_profiles: dict[str, str] = Field(default_factory=dict)
    #: extra or overriding profiles by name
    profiles: dict[str, ProfileConfig] = Field(default_factory=dict)
    #: size -> GPU type plans for standalone mode (``flotilla optimize --json`` output); in Kubernetes mode the
    #: ModelGroups' status.plan is watched instead (gateway/discovery/plans.py)
    routing_plan: Path | None = None
    #: must equal the engines' --block-size, or prefix matching silently fails (Dynamo PR #1233)
    block_size: int = Field(default=16, ge=1)
    hash_seed: int = 0
    #: at most this many leading blocks are hashed and matched (bounds per-request work on huge prompts)
    max_prefix_blocks: int = Field(default=512, ge=1)
    #: where prefix matches come from: learned from routing decisions, or from the engines' KV events
    prefix_mode: Literal["approximate", "precise"] = "approximate"
    #: what prefix blocks are cut from: "chars" = the prompt's text, blocks of block_size × chars_per_token
    #: characters, no tokenizer (gateway/chars.py; token counts are estimated); "tokens" = the tokenizer's ids,
    #: as the engine hashes them. Unset: chars in approximate mode (the index learns from routing, so its hashes
    #: need not equal the engine's), tokens in precise mode (they must; chars is refused there)
    prefix_hash: Literal["chars", "tokens"] | None = None
    #: characters per token for character blocks and token estimates (English BPE averages about 4)
    chars_per_token: int = Field(default=4, ge=1)
    #: "memory" (per replica) or "redis" (shared by replicas; needs redis_url)
    index_backend: Literal["memory", "redis"] = "memory"
    #: cap each engine's entries in the in-memory approximate index at the KV cache the engine reports (vLLM's
    #: ``cache_config_info`` ``num_gpu_blocks``, less its null block, in this gateway's block size), so the
    #: index forgets what the engine's own LRU must have evicted instead of steering prompts to caches that no
    #: longer hold them (the Redis backend keeps its URL's ``endpoint_capacity``)
    index_engine_capacity: bool = True
    redis_url: str | None = None
    #: the engines' tokenizer, as vLLM's --tokenizer: a model directory (tokenizer.json, tokenizer_config.json,
    #: chat_template.jinja; a mounted volume in Kubernetes) or its tokenizer.json. None = Flotilla's synthetic
    #: tokenizer, which engine_sim uses by default. Precise prefix routing is exact only with the engines' own.
    tokenizer: str | None = None
    #: as vLLM's --chat-template: a template file or the template itself, instead of the directory's own
    chat_template: str | None = None
    #: request bodies at least this large are parsed and tokenised on a worker thread, off the event loop
    tokenize_thread_bytes: int = Field(default=64 * 1024, ge=0)
    tokenize_threads: int = Field(default=2, ge=1)
    #: the interpreter's GIL switch interval in the gateway process (``flotilla gateway``): how long a
    #: tokenizer thread may hold the GIL while the event loop waits for it (Python's default is 5 ms; see
    #: docs/benchmarks.md, health under load)
    switch_interval: float = Field(default=0.001, gt=0)

    # ------------------------------------------------------------------ engines' health and metrics
    #: scrape interval; load signals older than a few intervals are stale, so keep it short
    scrape_interval: float = Field(default=0.5, gt=0)
    scrape_timeout: float = Field(default=2.0, gt=0)
    #: /v1/models is re-read every this many seconds (adapters come and go)
    models_interval: float = Field(default=2.0, gt=0)
    #: consecutive scrape failures before an endpoint is taken out of rotation
    unhealthy_after: int = Field(default=2, ge=1)

    # ------------------------------------------------------------------ upstream and reliability
    #: "aiohttp" (the proxy calls aiohttp directly; scrapes use httpx over aiohttp's pool) or "httpx" (httpx's
    #: own pool for both, 4x the CPU per request); see gateway/upstream.py and docs/benchmarks.md
    transport: Literal["aiohttp", "httpx"] = "aiohttp"
    max_connections: int = Field(default=1000, ge=1)
    connect_timeout: float = Field(default=2.0, gt=0)
    #: time to the response headers (includes queueing and prefill on the engine)
    first_byte_timeout: float = Field(default=300.0, gt=0)
    #: longest silence between two chunks of a stream before it is ended with an error event
    stream_idle_timeout: float = Field(default=120.0, gt=0)
    #: extra endpoints tried after the first fails before any byte reached the client
    max_retries: int = Field(default=2, ge=0)
    #: retries may add at most this fraction of the request rate (plus retry_budget_min per second)
    retry_budget_ratio: float = Field(default=0.2, ge=0)
    retry_budget_min: float = Field(default=5.0, ge=0)
    #: consecutive failures that open an endpoint's circuit, and how long it stays open
    breaker_failures: int = Field(default=3, ge=1)
    breaker_cooldown: float = Field(default=5.0, gt=0)
    #: once started, move everything alive (imports, settings, pools) into the cyclic GC's permanent generation,
    #: so its full passes scan per-request objects only (~15 instead of ~100 ms; p99 under load 61 vs 106 ms,
    #: docs/benchmarks.md "gateway"). Process-wide, done once per process (gateway/app.py)
    gc_freeze: bool = True
    #: request bodies above this are refused with 413 before they are parsed
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    #: request line + headers above this get 431 and the connection closed (gateway/server.py)
    max_header_bytes: int = Field(default=64 * 1024, ge=4096)
    #: a request's head must arrive within this many seconds of the connection (or the previous response)
    header_timeout: float = Field(default=10.0, gt=0)
    #: Retry-After (seconds) sent with 503 when no endpoint can serve
    retry_after: int = Field(default=1, ge=0)
    #: a request for a declared model with no ready endpoint (scaled to zero, adapter being placed, engines not
    #: reached yet) waits this long for one before its 503; cover the engines' cold start (gateway/holding.py)
    hold_timeout: float = Field(default=30.0, ge=0)
    #: at most this many requests, and this many body bytes, are held at once; beyond, 503 at once
    hold_max_queued: int = Field(default=256, ge=0)
    hold_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0)

    # ------------------------------------------------------------------ API keys and limits
    #: plaintext keys (from env); stored only as SHA-256 digests once loaded
    api_keys: list[SecretStr] = Field(default_factory=list)
    #: YAML file: ``keys: [{name, key | sha256, rpm?, tpm?}]``
    api_keys_file: Path | None = None
    #: default per-key limits (None = unlimited); a key's own rpm/tpm wins
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    #: "redis" shares limits between replicas (falls back to memory while Redis is down)
    ratelimit_backend: Literal["memory", "redis"] = "memory"

    # ------------------------------------------------------------------ observability
    #: add ``x-flotilla-endpoint`` (the engine's address) to responses: handy on loopback, a leak of internal
    #: addresses anywhere else, so off by default
    debug_headers: bool = False
    log_json: bool = True
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _redis_means_shared(self) -> GatewaySettings:
        """A Redis URL is given to share state between replicas: unless a backend is named explicitly, both the
        prefix index and the rate limits use it (a URL that silently left the index per replica was a trap)."""
        if self.redis_url:
            if "index_backend" not in self.model_fields_set:
                self.index_backend = "redis"
            if "ratelimit_backend" not in self.model_fields_set:
                self.ratelimit_backend = "redis"
        elif self.index_backend == "redis" or self.ratelimit_backend == "redis":
            raise ValueError("a 'redis' index or rate-limit backend needs redis_url")
        return self

    @model_validator(mode="after")
    def _prefix_hash(self) -> GatewaySettings:
        """Chars by default in approximate mode; precise mode matches the engines' KV events, so it needs tokens."""
        if self.prefix_hash is None:
            self.prefix_hash = "tokens" if self.prefix_mode == "precise" else "chars"
        elif self.prefix_hash == "chars" and self.prefix_mode == "precise":
            raise ValueError(
                "prefix_hash 'chars' cannot be used with prefix_mode 'precise': the engines' KV events are "
                "hashed over token ids, so precise mode needs prefix_hash 'tokens' (or leave it unset)"
            )
        return self

    @field_validator("engines")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        out = []
        for url in value:
            url = url.strip().rstrip("/")
            if not url.startswith(("http://", "https://")):
                url = "http://" + url
            out.append(url)
        return out
