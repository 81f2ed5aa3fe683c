"""vLLM's Prometheus metrics (reference/vllm-interface.md §3), one registry per engine.

Names, types, labels and buckets are vLLM's (``vllm/v1/metrics/loggers.py``), so the gateway, the autoscaler
and any Prometheus dashboard read a simulated pod exactly like a real one. Each engine owns a
``CollectorRegistry``: several engines share a process, and a process-global registry would merge them.

Histogram values are **simulated** seconds (the engine clock), independent of ``--time-scale`` and of how
loaded the host is. The deprecated ``vllm:gpu_cache_usage_perc`` is exported too (consumers read both).
``flotilla_sim_lag_seconds`` is ours: how far the simulation runs behind wall time (0 when keeping up), in
simulated seconds; ``flotilla_sim_lag_max_seconds`` keeps its maximum since start.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from engine_sim.request import Request

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0)  # fmt: skip
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
                   240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
ITERATION_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
N_BUCKETS = (1, 2, 5, 10, 20)
FINISH_REASONS = ("stop", "length", "abort", "error")


def one_two_five(limit: int) -> tuple[float, ...]:
    """vLLM's ``build_1_2_5_buckets``: 1, 2, 5, 10, 20, 50, … up to ``limit``."""
    out: list[float] = []
    exp = 0
    while True:
        for m in (1, 2, 5):
            v = m * 10**exp
            if v > limit:
                return tuple(out)
            out.append(float(v))
        exp += 1


class EngineMetrics:
    def __init__(
        self, *, model_name: str, engine: int, max_model_len: int, cache_info: dict[str, str]
    ) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        labels = ("model_name", "engine")
        self.labels = (model_name, str(engine))
        lv = self.labels

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=r, multiprocess_mode="all").labels(*lv)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=r).labels(*lv)

        def hist(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=r).labels(*lv)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.gpu_usage = gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage (deprecated name).")
        self.lag = gauge(
            "flotilla_sim_lag_seconds", "Simulated time behind wall time (simulator is CPU-bound)."
        )
        self.max_lag = gauge("flotilla_sim_lag_max_seconds", "Largest flotilla_sim_lag_seconds since start.")
        self._max_lag = 0.0
        self.prefix_queries = counter("vllm:prefix_cache_queries", "Prefix cache queries, in tokens.")
        self.prefix_hits = counter("vllm:prefix_cache_hits", "Prefix cache hits, in tokens.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemptions.")
        success = Counter("vllm:request_success", "Count of successfully processed requests.",
                          (*labels, "finished_reason"), registry=r)  # fmt: skip
        self.success = {reason: success.labels(*lv, reason) for reason in FINISH_REASONS}

        self.ttft = hist("vllm:time_to_first_token_seconds", "Time to first token.", TTFT_BUCKETS)
        self.itl = hist("vllm:inter_token_latency_seconds", "Inter-token latency.", ITL_BUCKETS)
        self.tpot_legacy = hist("vllm:time_per_output_token_seconds", "Time per output token (deprecated name).",
                                ITL_BUCKETS)  # fmt: skip
        self.tpot = hist("vllm:request_time_per_output_token_seconds", "Per-request TPOT.", ITL_BUCKETS)
        self.e2e = hist("vllm:e2e_request_latency_seconds", "End-to-end request latency.", REQUEST_BUCKETS)
        self.queue = hist("vllm:request_queue_time_seconds", "Time in the WAITING phase.", REQUEST_BUCKETS)
        self.inference = hist(
            "vllm:request_inference_time_seconds", "Time in the RUNNING phase.", REQUEST_BUCKETS
        )
        self.prefill = hist(
            "vllm:request_prefill_time_seconds", "Time in the PREFILL phase.", REQUEST_BUCKETS
        )
        self.decode = hist("vllm:request_decode_time_seconds", "Time in the DECODE phase.", REQUEST_BUCKETS)
        tok_buckets = one_two_five(max_model_len)
        self.req_prompt = hist("vllm:request_prompt_tokens", "Prompt tokens per request.", tok_buckets)
        self.req_gen = hist("vllm:request_generation_tokens", "Generated tokens per request.", tok_buckets)
        self.req_max_gen = hist("vllm:request_max_num_generation_tokens", "Max generation tokens per request.",
                                tok_buckets)  # fmt: skip
        self.req_max_tokens = hist("vllm:request_params_max_tokens", "The max_tokens request parameter.",
                                   tok_buckets)  # fmt: skip
        self.req_kv_computed = hist("vllm:request_prefill_kv_computed_tokens",
                                    "Prefill tokens computed (not served from the prefix cache).", tok_buckets)  # fmt: skip
        self.req_n = hist("vllm:request_params_n", "The n request parameter.", N_BUCKETS)
        self.iteration = hist("vllm:iteration_tokens_total", "Tokens per engine step.", ITERATION_BUCKETS)

        sleep = Gauge("vllm:engine_sleep_state", "Engine sleep state (1 = current).", (*labels, "sleep_state"),
                      registry=r)  # fmt: skip
        self._sleep = {
            state: sleep.labels(*lv, state) for state in ("awake", "weights_offloaded", "discard_all")
        }
        self.sleep_state("awake")
        info = Gauge("vllm:cache_config_info", "Information of the LLMEngine CacheConfig.",
                     tuple(cache_info), registry=r)  # fmt: skip
        info.labels(**cache_info).set(1)
        self._lora_info: Gauge | None = None
        self._lora_loads: Counter | None = None
        self._lora_reloads: Counter | None = None

    def sleep_state(self, current: str) -> None:
        for state, gauge in self._sleep.items():
            gauge.set(1 if state == current else 0)

    def enable_lora_info(self) -> None:
        self._lora_info = Gauge(
            "vllm:lora_requests_info",
            "Running stats on LoRA requests.",
            ("running_lora_adapters", "max_lora", "waiting_lora_adapters"),
            registry=self.registry,
        )

        # ours: what a placement costs the engine. Runtime loads through /v1/load_lora_adapter (the operator's
        # e2e counts them to prove "no duplicate loads"), and adapter (re)loads into the worker's CPU cache
        # that a step had to wait for (vLLM's LRU swapping; the LoRA benchmark's "swaps")
        self._lora_loads = Counter(
            "flotilla_sim_lora_loads",
            "Runtime LoRA loads that succeeded.",
            ("lora_name",),
            registry=self.registry,
        )
        self._lora_reloads = Counter(
            "flotilla_sim_lora_swaps",
            "Adapters a step had to load into the CPU cache first.",
            registry=self.registry,
        )

    def lora_loaded(self, name: str) -> None:
        if self._lora_loads is not None:
            self._lora_loads.labels(name).inc()

    def lora_reloaded(self, count: int) -> None:
        if self._lora_reloads is not None and count:
            self._lora_reloads.inc(count)

    def lora_info(self, max_lora: int, running: str, waiting: str) -> None:
        if self._lora_info is not None:
            self._lora_info.labels(running, str(max_lora), waiting).set_to_current_time()

    def set_gauges(self, running: int, waiting: int, kv_usage: float, lag: float) -> None:
        self.running.set(running)
        self.waiting.set(waiting)
        self.kv_usage.set(kv_usage)
        self.gpu_usage.set(kv_usage)
        self.lag.set(lag)
        if lag > self._max_lag:
            self._max_lag = lag
            self.max_lag.set(lag)

    def observe_finished(self, req: Request, max_tokens_param: int | None) -> None:
        t = req.timing
        reason = req.finish_reason or "abort"
        self.success.get(reason, self.success["error"]).inc()
        self.req_prompt.observe(req.prompt_len)
        self.req_gen.observe(req.num_output)
        self.req_max_gen.observe(req.max_tokens)
        if max_tokens_param is not None:
            self.req_max_tokens.observe(max_tokens_param)
        self.req_n.observe(1)
        self.req_kv_computed.observe(max(0, req.prompt_len - req.cached_tokens))
        end = t.finished if t.finished is not None else t.arrival
        self.e2e.observe(end - t.arrival)
        if t.scheduled is not None:
            self.queue.observe(t.scheduled - t.arrival)
            self.inference.observe(end - t.scheduled)
            first = t.first_token if t.first_token is not None else end
            self.prefill.observe(first - t.scheduled)
            self.decode.observe(end - first)
        if req.num_output > 1 and t.first_token is not None:
            self.tpot.observe((end - t.first_token) / (req.num_output - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)
