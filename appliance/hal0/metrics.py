"""Prometheus metrics: one registry per app, so several apps (tests) never share counters.

Beyond request counts this exports what an inference operator needs and peers lack: a
time-to-first-token histogram per model, token counters, queue depth and load state, and the
model lifecycle: loads and unloads by reason, load durations, the number of models in memory, and
the prompt cache: prompt tokens served from cache vs computed, RAM cache lookups, bytes and entries,
and where each loaded model runs (layers offloaded, bytes per device), as llama.cpp's load log says.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hal0.inference import Lifecycle, ModelRegistry, ModelState
from hal0.inference.offload import MemoryKind
from hal0.inference.prompt_cache import CacheSize, PromptReuse

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
_WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_STEP_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
_LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _ModelCollector(Collector):
    """Queue depth and load state, read from the live lifecycle at scrape time."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self._lifecycle = lifecycle

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily("hal0_queue_depth", "Requests waiting for a model", labels=["model"])
        busy = GaugeMetricFamily("hal0_model_busy", "1 while the model is generating", labels=["model"])
        slots = GaugeMetricFamily("hal0_slots", "Generation slots of the model (models[].parallel)", labels=["model"])
        busy_slots = GaugeMetricFamily("hal0_busy_slots", "Slots holding a request", labels=["model"])
        state = GaugeMetricFamily("hal0_model_state", "Model load state (1 = current)", labels=["model", "state"])
        loaded = GaugeMetricFamily("hal0_loaded_models", "Models in memory (ready)")
        # Only for loaded models, from llama.cpp's own load log (never the config's n_gpu_layers).
        layers = GaugeMetricFamily("hal0_model_layers", "Layers of the loaded model, as llama.cpp counts them (repeating plus output)",
                                   labels=["model"])
        offloaded = GaugeMetricFamily("hal0_model_layers_offloaded", "Layers llama.cpp assigned to a device other than the CPU",
                                      labels=["model", "backend"])
        device_bytes = GaugeMetricFamily("hal0_model_device_bytes", "Bytes of the loaded model's buffers per device (CPU: host memory) "
                                         "and kind (model weights, kv cache, compute buffers)", labels=["model", "device", "kind"])
        for model in self._lifecycle.statuses():
            # Waiting counts requests waiting for the model's load as well as for a slot.
            depth.add_metric([model.id], model.waiting)
            busy.add_metric([model.id], 1 if model.running else 0)
            slots.add_metric([model.id], model.slots)
            busy_slots.add_metric([model.id], model.running)
            for candidate in ModelState:
                state.add_metric([model.id, candidate.value], 1 if model.state is candidate else 0)
            offload = model.offload
            if offload is not None:
                layers.add_metric([model.id], offload.layers_total)
                offloaded.add_metric([model.id, offload.backend], offload.layers_offloaded)
                for use in offload.devices:
                    for kind in MemoryKind:
                        device_bytes.add_metric([model.id, use.device.name, kind.value], use.bytes[kind])
        loaded.add_metric([], self._lifecycle.loaded_count)
        return [depth, busy, slots, busy_slots, state, loaded, layers, offloaded, device_bytes]


def _sample(metric: Counter | Gauge, model: str) -> float:
    """A counter's total (or a gauge's value) for one model; 0 before anything was recorded."""
    for family in metric.collect():
        for sample in family.samples:
            if sample.labels.get("model") == model and not sample.name.endswith("_created"):
                return sample.value
    return 0.0


class Metrics:
    def __init__(self, models: ModelRegistry, lifecycle: Lifecycle) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hal0_requests", "HTTP requests by route, method and status", ["route", "method", "status"], registry=self.registry
        )
        self.duration = Histogram(
            "hal0_request_duration_seconds", "HTTP request duration, until the last byte", ["route"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.ttft = Histogram(
            "hal0_time_to_first_token_seconds", "Time from request start to the first generated token", ["model"],
            buckets=_TTFT_BUCKETS, registry=self.registry,
        )
        self.prompt_tokens = Counter("hal0_prompt_tokens", "Prompt tokens processed", ["model"], registry=self.registry)
        self.generated_tokens = Counter("hal0_generated_tokens", "Tokens generated", ["model"], registry=self.registry)
        self.queue_wait_seconds = Histogram(
            "hal0_queue_wait_seconds", "Time a request waited for a generation slot", ["model"],
            buckets=_WAIT_BUCKETS, registry=self.registry,
        )
        self.step_tokens = Histogram(
            "hal0_decode_step_generated_tokens", "Tokens generated per batched decode step (parallel > 1)", ["model"],
            buckets=_STEP_BUCKETS, registry=self.registry,
        )
        self.mcp_sessions_refused = Counter(
            "hal0_mcp_sessions_refused", "MCP sessions refused by a cap (mcp.sessions), by cap", ["reason"], registry=self.registry
        )
        self.loads = Counter("hal0_model_loads", "Models loaded, by reason (startup, request, admin)", ["model", "reason"],
                             registry=self.registry)
        self.load_failures = Counter("hal0_model_load_failures", "Model loads that failed, by reason", ["model", "reason"],
                                     registry=self.registry)
        self.unloads = Counter("hal0_model_unloads", "Models unloaded, by reason (keep_alive, evicted, admin)",
                               ["model", "reason"], registry=self.registry)
        self.load_seconds = Histogram("hal0_model_load_duration_seconds", "Time to load a model into memory", ["model"],
                                      buckets=_LOAD_BUCKETS, registry=self.registry)
        # Per persona (ids from the config plus `other`): bounded, never a raw agent id.
        self.agent_requests_total = Counter("hal0_agent_requests", "Requests admitted (generations and tool calls) by persona",
                                      ["persona"], registry=self.registry)
        self.agent_tokens_total = Counter("hal0_agent_tokens", "Tokens (prompt plus generated) by persona", ["persona"], registry=self.registry)
        self.rate_limited_total = Counter("hal0_rate_limited", "Requests refused with 429 by persona and quota", ["persona", "quota"],
                                    registry=self.registry)
        self.prompt_cached = Counter("hal0_prompt_tokens_cached", "Prompt tokens whose KV came from the prompt cache (a slot or RAM)",
                                     ["model"], registry=self.registry)
        self.prompt_computed = Counter("hal0_prompt_tokens_computed", "Prompt tokens decoded (not served from the prompt cache)",
                                       ["model"], registry=self.registry)
        self.prompt_cache_hits = Counter("hal0_prompt_cache_hits", "RAM prompt cache lookups that restored a saved state",
                                         ["model"], registry=self.registry)
        self.prompt_cache_misses = Counter("hal0_prompt_cache_misses", "RAM prompt cache lookups that found nothing better than the slot",
                                           ["model"], registry=self.registry)
        self.prompt_cache_bytes = Gauge("hal0_prompt_cache_ram_bytes", "Bytes of sequence state in the RAM prompt cache",
                                        ["model"], registry=self.registry)
        self.prompt_cache_entries = Gauge("hal0_prompt_cache_ram_entries", "Sequence states in the RAM prompt cache",
                                          ["model"], registry=self.registry)
        self.registry.register(_ModelCollector(lifecycle))
        for runtime in models:
            runtime.observer = self
        lifecycle.observer = self

    def model_loaded(self, model: str, reason: str, seconds: float) -> None:
        self.loads.labels(model, reason).inc()
        self.load_seconds.labels(model).observe(seconds)

    def model_load_failed(self, model: str, reason: str) -> None:
        self.load_failures.labels(model, reason).inc()

    def model_unloaded(self, model: str, reason: str) -> None:
        self.unloads.labels(model, reason).inc()

    def queue_wait(self, model: str, seconds: float) -> None:
        self.queue_wait_seconds.labels(model).observe(seconds)

    def decode_step(self, model: str, generated: int, batch_tokens: int) -> None:
        if generated:  # steps that only read prompt tokens generate nothing yet
            self.step_tokens.labels(model).observe(generated)

    def agent_request(self, persona: str) -> None:
        self.agent_requests_total.labels(persona).inc()

    def agent_tokens(self, persona: str, tokens: int) -> None:
        self.agent_tokens_total.labels(persona).inc(tokens)

    def agent_limited(self, persona: str, quota: str) -> None:
        self.rate_limited_total.labels(persona, quota).inc()

    def record_generation(self, model: str, prompt_tokens: int, generated_tokens: int, ttft: float | None) -> None:
        self.prompt_tokens.labels(model).inc(prompt_tokens)
        self.generated_tokens.labels(model).inc(generated_tokens)
        if ttft is not None:
            self.ttft.labels(model).observe(ttft)

    def prompt_reuse(self, model: str, reuse: PromptReuse) -> None:
        self.prompt_cached.labels(model).inc(reuse.cached)
        self.prompt_computed.labels(model).inc(reuse.computed)
        if reuse.ram == "hit":
            self.prompt_cache_hits.labels(model).inc()
        elif reuse.ram == "miss":
            self.prompt_cache_misses.labels(model).inc()

    def prompt_cache_size(self, model: str, size: CacheSize) -> None:
        self.prompt_cache_bytes.labels(model).set(size.bytes)
        self.prompt_cache_entries.labels(model).set(size.entries)

    def prompt_cache(self, model: str) -> dict[str, float | None]:
        """The prompt cache of one model as the Models tab and /v1/models show it; hit_ratio is
        cached / (cached + computed) prompt tokens, None before any prompt."""
        cached, computed = _sample(self.prompt_cached, model), _sample(self.prompt_computed, model)
        return {
            "hit_ratio": cached / (cached + computed) if cached + computed else None,
            "cached_tokens": cached,
            "computed_tokens": computed,
            "ram_hits": _sample(self.prompt_cache_hits, model),
            "ram_misses": _sample(self.prompt_cache_misses, model),
            "ram_bytes": _sample(self.prompt_cache_bytes, model),
            "ram_entries": _sample(self.prompt_cache_entries, model),
        }

    def render(self) -> bytes:
        return generate_latest(self.registry)
