"""The hal0 configuration, declared once.

These pydantic models are the single source of truth: the YAML file is validated against them,
`hal0 config schema` prints their JSON Schema, the README's reference table is generated from
their field descriptions, and the Ansible role's defaults are checked against them by a test.

Every model is frozen (the server holds one immutable config and swaps it whole on reload) and
forbids unknown keys, so a typo is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

AGENT_ID_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
MODEL_ID_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9._:-]{0,63}$"
DURATION_PATTERN = r"^[1-9][0-9]*(s|m|h|d)$"
TOOL_PATTERN = r"^(\*|[a-z_]+):(\*|[a-z_*]+)$"
_MIN_SLOT_CTX = 64  # a slot smaller than this cannot hold a chat prompt and an answer

AgentId = Annotated[str, Field(pattern=AGENT_ID_PATTERN)]
ModelId = Annotated[str, Field(pattern=MODEL_ID_PATTERN)]


class PromptCacheScope(enum.StrEnum):
    """Whose cached KV a request may reuse (models[].prompt_cache_scope)."""

    AGENT = "agent"  # its own agent's, plus its persona's configured system prompt
    PERSONA = "persona"  # any agent's of its persona
    SHARED = "shared"  # anyone's


class ToolFormat(enum.StrEnum):
    """How a model's replies call tools (models[].tool_format)."""

    NATIVE = "native"  # in the model's own syntax, learned from its chat template
    GENERIC = "generic"  # in hal0's generic JSON format, described in the system turn


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    """How the HTTP server listens and how much work it accepts."""

    bind: str = Field(
        "0.0.0.0",
        description="Address to listen on. 0.0.0.0 serves the LAN; 127.0.0.1 when a reverse proxy "
        "on the same box is the only client.",
    )
    port: int = Field(8080, ge=1, le=65535, description="TCP port of the API, MCP mounts and dashboard.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Server log verbosity."
    )
    queue_limit: int = Field(
        16,
        ge=0,
        le=10000,
        description="Requests that may wait per model while one generates; more get 503 with Retry-After.",
    )
    request_timeout_s: float = Field(
        600, gt=0, le=86400, description="A generation running longer than this is stopped."
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, le=256 * 1024 * 1024, description="Larger request bodies get 413."
    )
    stream_buffer_bytes: int = Field(
        1_048_576,
        ge=4096,
        le=256 * 1024 * 1024,
        description="Bytes of a stream (SSE) produced and not yet sent that hal0 keeps for a slow client. The model's "
        "slot is freed when the generation ends, whatever is left to send; a generation that fills this waits for "
        "the client (at most stream_send_timeout_s).",
    )
    stream_send_timeout_s: float = Field(
        30, gt=0, le=3600,
        description="A streaming client that makes no room for this long (it stopped reading) has its generation "
        "stopped and its connection dropped.",
    )
    header_timeout_s: float = Field(
        10, gt=0, le=3600,
        description="A request line and headers must arrive complete within this many seconds of their first byte "
        "(or of the connection's opening); else the connection is closed (slow-loris).",
    )
    body_timeout_s: float = Field(
        60, gt=0, le=86400,
        description="A request body must arrive complete within this many seconds of the headers; else the "
        "connection is closed (a body trickled byte by byte).",
    )
    max_connections: int = Field(
        1024, ge=16, le=1_000_000,
        description="Connections and requests in progress at most; a request beyond them gets 503 at once. Keep "
        "it under the service's open-file limit (LimitNOFILE in the unit).",
    )
    max_loaded_models: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Most models in memory at once (null: no limit). Loading one more first unloads the least "
        "recently used idle, unpinned model; a model with requests running or waiting is never unloaded, so "
        "when none can go the request waits in its model's queue. Needs a restart to change.",
    )
    gpu_devices: tuple[Annotated[int, Field(ge=0, le=63)], ...] | None = Field(
        None,
        min_length=1,
        description="Indices of the GPU devices llama.cpp may use (null: the backend's choice). roles/hal0 puts them "
        "in the service's environment for the box's backend (vulkan: GGML_VK_VISIBLE_DEVICES, cuda: "
        "CUDA_VISIBLE_DEVICES). Vulkan skips CPU-type devices such as Mesa's llvmpipe unless they are listed here "
        "(the lab's vulkan box: [0]). Needs a restart to change.",
    )

    @field_validator("gpu_devices")
    @classmethod
    def _gpu_devices_unique(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"lists a device twice: {list(value)}")
        return value

    @field_validator("bind")
    @classmethod
    def _bind_is_an_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"must be an IP address such as 0.0.0.0 or 127.0.0.1, got {value!r}") from None
        return value


_HOST_ENTRY = re.compile(
    r"^(?P<host>\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9]([a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?)(:(?P<port>\*|[0-9]{1,5}))?$"
)
_ORIGIN_ENTRY = re.compile(r"^https?://(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9.-]+)(:([0-9]{1,5}|\*))?$")


def check_host_entry(entry: str) -> str:
    """Validate one `mcp.allowed_hosts` entry: host, host:port or host:*."""
    if "://" in entry:
        raise ValueError(f"{entry!r}: a host has no scheme; write it without http:// or https://")
    if "/" in entry:
        raise ValueError(f"{entry!r}: a host has no path")
    match = _HOST_ENTRY.fullmatch(entry)
    if not match:
        raise ValueError(f"{entry!r}: expected host, host:port or host:*")
    port = match.group("port")
    if port not in (None, "*") and not 1 <= int(port) <= 65535:
        raise ValueError(f"{entry!r}: port must be 1-65535")
    return entry


def check_origin_entry(entry: str) -> str:
    """Validate one `mcp.allowed_origins` entry: scheme://host[:port], no path."""
    match = _ORIGIN_ENTRY.fullmatch(entry)
    if not match:
        raise ValueError(f"{entry!r}: expected an origin such as http://host or https://host:8443 (no path)")
    port = match.group(3)
    if port not in (None, "*") and not 1 <= int(port) <= 65535:
        raise ValueError(f"{entry!r}: port must be 1-65535")
    return entry


class McpSessions(_Section):
    """Bounds on open MCP sessions (streamable HTTP). Each costs memory until it is closed or expires."""

    max_total: int = Field(
        256, ge=1, le=10000,
        description="Open sessions over /mcp/admin and /mcp/memory together; one more is refused (503, Retry-After: the seconds "
        "until the first open session expires if left idle).",
    )
    max_per_agent: int = Field(
        64, ge=1, le=10000,
        description="Open sessions one agent id (X-hal0-Agent) may hold; one more is refused (429, Retry-After: the seconds "
        "until the first of that agent's sessions expires if left idle).",
    )
    idle_timeout_s: float = Field(
        600, ge=1, le=86400,
        description="A session with no request in flight (and no open stream) for this long is closed, and its slot under "
        "max_per_agent and max_total is free; a client that never closes its sessions holds them this long. Its client "
        "re-initializes. Applies to sessions opened after a reload.",
    )

    @model_validator(mode="after")
    def _per_agent_fits_total(self) -> McpSessions:
        from hal0.config.errors import CrossFieldError

        if self.max_per_agent > self.max_total:
            raise CrossFieldError([(("max_per_agent",), f"max_per_agent ({self.max_per_agent}) exceeds max_total ({self.max_total})")])
        return self


class McpConfig(_Section):
    """The MCP mounts: the DNS-rebinding gate (which Host and Origin values are accepted on /mcp/* and
    on the human channel's approve/deny) and the session limits."""

    allowed_hosts: tuple[str, ...] = Field(
        (),
        description="Hosts added to the loopback allowlist (host, host:port or host:*). The single "
        "value * disables DNS-rebinding protection. HAL0_MCP_ALLOWED_HOSTS adds to this list.",
    )
    allowed_origins: tuple[str, ...] = Field(
        (),
        description="Browser origins allowed on /mcp/*. Empty: http:// and https:// origins are derived "
        "from every allowed host. HAL0_MCP_ALLOWED_ORIGINS, when set, replaces this list.",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "*" in value:
            if len(value) > 1:
                raise ValueError("'*' disables the gate and cannot be mixed with other hosts")
            return value
        return tuple(check_host_entry(entry) for entry in value)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "*" in value:
            if len(value) > 1:
                raise ValueError("'*' cannot be mixed with other origins")
            return value
        return tuple(check_origin_entry(entry) for entry in value)

    sessions: McpSessions = McpSessions()


class MemoryConfig(_Section):
    """The opt-in, per-agent memory store."""

    enabled: bool = Field(False, description="Memory is off unless you turn it on.")
    path: str = Field("/var/lib/hal0/memory.db", description="SQLite file for memory (WAL mode).")
    max_items_per_agent: int = Field(10000, ge=1, le=10_000_000, description="Items one agent may keep.")
    max_item_bytes: int = Field(16384, ge=64, le=16 * 1024 * 1024, description="Largest item text, in bytes.")


class ModelConfig(_Section):
    """One GGUF model served through llama-cpp-python."""

    id: ModelId = Field(description="The name clients use in the `model` field.")
    path: str = Field(description="Path of the GGUF file on the box.")
    default: bool = Field(False, description="Serve requests that name no model. Exactly one model is the default.")
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="Expected sha256 of the file, checked by the installer."
    )
    n_gpu_layers: int = Field(
        0, ge=-1, description="Layers offloaded to the GPU: 0 = CPU only, -1 = all layers."
    )
    n_ctx: int = Field(4096, ge=16, le=1_048_576, description="Context window in tokens.")
    n_batch: int = Field(512, ge=1, le=65536, description="Prompt-processing batch size.")
    n_ubatch: int = Field(512, ge=1, le=65536, description="Physical micro-batch size.")
    n_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Generation threads. null: the physical cores available to the process (its CPU "
        "affinity and cgroup CPU quota, SMT siblings counted once), in both generation modes.",
    )
    n_threads_batch: int | None = Field(
        None, ge=1, le=1024, description="Prompt-processing threads (null: the same as n_threads)."
    )
    adaptive_threads: bool = Field(
        True,
        description="Use fewer threads while other work keeps the cores busy: the count follows measured "
        "generation speed, between 1 and n_threads, and returns to n_threads when that is fastest again "
        "(llama.cpp's threads wait on each other, so one descheduled thread stalls them all). false: always n_threads.",
    )
    main_gpu: int = Field(0, ge=0, description="GPU used for the whole model or its scratch buffers.")
    split_mode: Literal["none", "layer", "row"] = Field("layer", description="How to split across several GPUs.")
    tensor_split: tuple[float, ...] | None = Field(
        None, description="Fraction of the model per GPU, e.g. [0.5, 0.5]."
    )
    flash_attn: bool = Field(
        True,
        description="Flash attention (fused attention over the KV cache). On by default, as llama-server's "
        "auto turns it on for the CPU, CUDA and Vulkan backends (gemma3-270m on 2 CPU threads: 3 to 8% more "
        "tokens/s). false: the plain attention path.",
    )
    offload_kqv: bool = Field(True, description="Keep the KV cache on the GPU when layers are offloaded.")
    use_mmap: bool = Field(True, description="Memory-map the model file.")
    use_mlock: bool = Field(False, description="Lock the model in RAM (needs LimitMEMLOCK).")
    chat_format: str | None = Field(
        None, description="llama-cpp-python chat format (e.g. chatml, gemma); default: the GGUF's template."
    )
    chat_template_file: str | None = Field(
        None,
        description="Path of a Jinja chat template file used instead of the GGUF's own (as llama-server's "
        "--chat-template-file); rendered in hal0's sandbox like the GGUF's. Not with chat_format.",
    )
    tool_format: ToolFormat | None = Field(
        None,
        description="How replies call tools. native: in the model's own syntax (`<tool_call>`, `[TOOL_CALLS]`, "
        "a bare JSON call...), learned by rendering its chat template, parsed per family and constrained once a "
        "call opens; generic: hal0's JSON format, described in the system turn (any template). null: native when "
        "the template writes calls as a name and JSON arguments, else generic; /v1/models says which.",
    )
    embeddings: bool = Field(True, description="Serve /v1/embeddings with this model.")
    seed: int = Field(-1, ge=-1, description="Default sampling seed; -1 = random.")
    parallel: int = Field(
        1,
        ge=1,
        le=64,
        description="Slots decoded together (continuous batching). 1 = one generation at a time; more "
        "serve several clients at once and multiply throughput on small models.",
    )
    n_ctx_per_slot: int | None = Field(
        None,
        ge=16,
        le=1_048_576,
        description="Context window of each slot in tokens (default: n_ctx / parallel). "
        "parallel x n_ctx_per_slot must fit n_ctx.",
    )
    prompt_cache_mib: int = Field(
        1024,
        ge=0,
        le=1_048_576,
        description="Host RAM (MiB) for the prompt cache behind the slots: when a slot is taken for another "
        "prompt, the KV state it held is kept here and restored when a prompt with the same beginning returns, "
        "so a returning agent's history is not read again. Least recently saved states go first. 0: off (each "
        "slot still reuses the common prefix of what it last held).",
    )
    prompt_cache_scope: PromptCacheScope = Field(
        PromptCacheScope.AGENT,
        description="Whose cached prompts a request may reuse. agent: only KV its own agent (X-hal0-Agent) "
        "produced, plus its persona's configured system prompt, which is config, not a secret. persona: any "
        "agent's of the same persona. shared: anyone's (the most reuse, but an agent can then learn what "
        "another sent, by probing prefixes and reading the speed or the cache metrics).",
    )
    load: Literal["startup", "on_demand"] = Field(
        "startup",
        description="startup: loaded when hal0 starts, and /health is 503 until it is ready. on_demand: loaded by "
        "the first request for it (which waits for the load); it never makes /health fail. The default model "
        "must be startup, so that a healthy box can serve requests that name no model (give it a keep_alive "
        "to free its memory when idle).",
    )
    keep_alive: Annotated[str, Field(pattern=DURATION_PATTERN)] | None = Field(
        None,
        description="Unload the model after it has been idle this long (30s, 5m, 1h; null: never). The next "
        "request loads it again.",
    )
    pinned: bool = Field(
        False,
        description="Never unloaded to make room under server.max_loaded_models (only an admin unload_model "
        "unloads it). A pinned model takes no keep_alive.",
    )

    @field_validator("tensor_split")
    @classmethod
    def _split_fractions(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and (not value or any(part < 0 for part in value) or sum(value) <= 0):
            raise ValueError("must list one non-negative share per GPU, with a positive total")
        return value

    @model_validator(mode="after")
    def _ubatch_fits_batch(self) -> ModelConfig:
        if self.n_ubatch > self.n_batch:
            raise ValueError(f"n_ubatch ({self.n_ubatch}) must not exceed n_batch ({self.n_batch})")
        return self

    @model_validator(mode="after")
    def _slots_fit_context(self) -> ModelConfig:
        # Errors name their own field (CrossFieldError paths are relative to this model), so
        # `hal0 config validate` points at the line to change.
        from hal0.config.errors import CrossFieldError

        if self.n_ctx_per_slot is not None and self.parallel * self.n_ctx_per_slot > self.n_ctx:
            raise CrossFieldError([(("n_ctx_per_slot",), f"parallel ({self.parallel}) x n_ctx_per_slot "
                                    f"({self.n_ctx_per_slot}) = {self.parallel * self.n_ctx_per_slot} exceeds n_ctx ({self.n_ctx})")])
        if self.parallel > self.n_batch:
            raise CrossFieldError([(("parallel",), f"{self.parallel} slots need n_batch >= {self.parallel} (n_batch is {self.n_batch})")])
        if self.n_ctx_per_slot is None and self.n_ctx // self.parallel < _MIN_SLOT_CTX:
            raise CrossFieldError([(("parallel",), f"n_ctx ({self.n_ctx}) / parallel ({self.parallel}) leaves "
                                    f"{self.n_ctx // self.parallel} tokens per slot; at least {_MIN_SLOT_CTX} are needed")])
        return self

    @model_validator(mode="after")
    def _one_template(self) -> ModelConfig:
        from hal0.config.errors import CrossFieldError

        if self.chat_format is not None and self.chat_template_file is not None:
            raise CrossFieldError([(("chat_template_file",), "set chat_format or chat_template_file, not both")])
        return self

    @model_validator(mode="after")
    def _lifecycle_is_coherent(self) -> ModelConfig:
        from hal0.config.errors import CrossFieldError

        if self.pinned and self.keep_alive is not None:
            raise CrossFieldError([(("keep_alive",), "a pinned model is never unloaded automatically; "
                                    "remove keep_alive or pinned")])
        return self

    @property
    def keep_alive_s(self) -> float | None:
        """keep_alive in seconds, or None for never."""
        from hal0.config.durations import seconds

        return None if self.keep_alive is None else seconds(self.keep_alive)

    @property
    def slot_ctx(self) -> int:
        """Tokens of context each slot gets."""
        return self.n_ctx_per_slot or self.n_ctx // self.parallel


class GenerationParams(_Section):
    """Default sampling parameters a persona applies; a request may override them."""

    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature, 0-2 (null: the request's or llama.cpp's).")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling, above 0 up to 1.")
    top_k: int | None = Field(None, ge=0, description="Sample from the k most likely tokens (0: all).")
    max_tokens: int | None = Field(None, ge=1, description="Tokens generated when the request names no max_tokens.")
    stop: tuple[str, ...] | None = Field(None, description="Stop sequences used when the request names none.")
    reasoning_format: Literal["auto", "none"] | None = Field(
        None,
        description="A thinking model's reasoning when the request names no reasoning_format: auto splits it out "
        "(reasoning_content, a Responses reasoning item, Messages thinking blocks); none leaves it inline in the answer.",
    )


class PersonaLimits(_Section):
    """Ceilings a request from this agent may not exceed, whatever it asks for."""

    max_tokens: int | None = Field(None, ge=1, description="Most tokens one request may generate: a larger max_tokens is refused (400), none means this.")
    max_temperature: float | None = Field(None, ge=0, le=2, description="Highest temperature a request may ask for (higher is refused, 400).")
    requests_per_minute: int | None = Field(
        None, ge=1, le=1_000_000, description="Requests (generations and tool calls) one agent id may make in any 60 s; "
        "more get 429 rate_limit_exceeded with a Retry-After in seconds.")
    tokens_per_minute: int | None = Field(
        None, ge=1, le=1_000_000_000, description="Tokens (prompt plus generated) one agent id may use in any 60 s; "
        "a generation asked for once the window is spent gets 429 with the seconds until enough tokens age out.")
    max_concurrent: int | None = Field(
        None, ge=1, le=10_000, description="Generations one agent id may have running or waiting at once; one more gets 429.")


class PersonaMemory(_Section):
    """Per-persona memory limits, tighter than the global ones."""

    max_items: int | None = Field(None, ge=1, description="Items this agent may keep; the smaller of this and memory.max_items_per_agent applies.")
    max_item_bytes: int | None = Field(None, ge=64, description="Largest item text in bytes; the smaller of this and memory.max_item_bytes applies.")


class Persona(_Section):
    """How hal0 treats one agent id: prompt, model, defaults and the tools it may use."""

    id: AgentId = Field(description="The X-hal0-Agent value this persona applies to.")
    description: str = Field("", description="Free text for operators; never sent to the model.")
    model: ModelId | None = Field(None, description="Model used when a request names none.")
    system_prompt: str | None = Field(None, description="Prepended as the system message of this agent's chats.")
    params: GenerationParams = GenerationParams()
    limits: PersonaLimits = PersonaLimits()
    memory: PersonaMemory = PersonaMemory()
    tools: tuple[Annotated[str, Field(pattern=TOOL_PATTERN)], ...] = Field(
        (), description="Tool patterns over server:tool, e.g. memory:* or admin:status."
    )


RuleVerdict = Literal["allow", "ask", "deny"]


class RulePattern(_Section):
    """Which calls the rule applies to: agent and server:tool glob patterns, and argument values that must be equal."""

    agent: str = Field("*", description="Agent id or glob pattern.")
    tool: Annotated[str, Field(pattern=TOOL_PATTERN)] = Field("*:*", description="server:tool pattern.")
    args: dict[str, Any] = Field(default_factory=dict, description="Argument values that must be equal.")


class RuleExample(_Section):
    """A call the rule's author means it to match (or not): checked by `hal0 config validate`."""

    agent: AgentId = "anonymous"
    tool: Annotated[str, Field(pattern=r"^[a-z_]+:[a-z_]+$")]
    args: dict[str, Any] = Field(default_factory=dict)


class RuleExamples(_Section):
    match: tuple[RuleExample, ...] = ()
    no_match: tuple[RuleExample, ...] = ()


class ApprovalRule(_Section):
    match: RulePattern = RulePattern()
    decision: RuleVerdict = Field(description="allow: run now; ask: enqueue an approval; deny: refuse.")
    reason: str = Field(min_length=1, description="Shown to the approver and returned on deny.")
    expires_after: Annotated[str, Field(pattern=DURATION_PATTERN)] | None = Field(
        None, description="A granted approval of this rule is valid this long (e.g. 10m) for the same call."
    )
    examples: RuleExamples | None = Field(None, description="Calls the rule must and must not match; checked on validation.")


def _rule(tool: str, decision: str, reason: str) -> ApprovalRule:
    return ApprovalRule.model_validate({"match": {"agent": "*", "tool": tool}, "decision": decision, "reason": reason})


DEFAULT_RULES: tuple[ApprovalRule, ...] = (
    _rule("memory:remember", "allow", "an agent may add to its own memory"),
    _rule("memory:update", "allow", "an agent may edit its own memory"),
    _rule("memory:forget", "allow", "an agent may delete single items of its own memory"),
    _rule("admin:load_model", "ask", "loading a model uses memory and can evict others"),
    _rule("admin:unload_model", "ask", "unloading stops inference"),
    _rule("admin:reload_config", "ask", "a reload changes policy for every agent"),
    _rule("memory:forget_all", "ask", "forgetting a whole namespace cannot be undone"),
)


class ApprovalsConfig(_Section):
    path: str = Field("/var/lib/hal0/approvals.db", description="SQLite file of the approval queue and audit log (WAL).")
    pending_ttl: Annotated[str, Field(pattern=DURATION_PATTERN)] = Field(
        "1h", description="A pending approval expires after this (e.g. 30m, 1h, 2d)."
    )
    max_pending_per_agent: int = Field(
        20, ge=1, le=10000,
        description="Distinct calls one agent may have waiting for a human; one more is refused (429) until a human "
        "clears some or they expire. Identical pending calls collapse into one and never count twice.",
    )
    rules: tuple[ApprovalRule, ...] = Field(
        default_factory=lambda: DEFAULT_RULES,
        description="Allow / ask / deny rules; deny beats ask beats allow. A state-changing tool no rule matches is ask. "
        "Default: an agent may change its own memory; model load/unload, config reload and memory forget_all ask a human.",
    )


def check_network_entry(entry: str) -> str:
    """Validate one `agents.identity.trusted_proxies` entry: an address or a CIDR."""
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        raise ValueError(f"{entry!r}: expected an IP address or a CIDR such as 10.0.0.0/24") from None
    return entry


class IdentityConfig(_Section):
    """Whose X-hal0-Agent header hal0 believes."""

    trusted_proxies: tuple[str, ...] = Field(
        (), description="Addresses or CIDRs of the reverse proxies that pin X-hal0-Agent. Empty: every peer's header is "
        "believed (the trusted-LAN posture). Set: a header from any other peer is refused (403); requests without one "
        "are the default agent.")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_network_entry(entry) for entry in value)


class AgentsConfig(_Section):
    """Agent personas and the approval policy for their tool calls."""

    default_agent: AgentId = Field("anonymous", description="Identity of callers sending no X-hal0-Agent header.")
    identity: IdentityConfig = IdentityConfig()
    personas: tuple[Persona, ...] = ()
    approvals: ApprovalsConfig = ApprovalsConfig()


class Hal0Config(_Section):
    """The whole hal0 policy file."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="hal0 configuration")

    server: ServerConfig = ServerConfig()
    mcp: McpConfig = McpConfig()
    memory: MemoryConfig = MemoryConfig()
    models: tuple[ModelConfig, ...] = Field(min_length=1, description="The GGUF models this box serves.")
    agents: AgentsConfig = AgentsConfig()

    @model_validator(mode="after")
    def _cross_references(self) -> Hal0Config:
        # Cross-field rules raise errors that name their own field path (see errors.CrossFieldError),
        # so `hal0 config validate` can point at the exact line.
        from hal0.config.errors import CrossFieldError

        problems: list[tuple[tuple[str | int, ...], str]] = []
        seen: dict[str, int] = {}
        for index, model in enumerate(self.models):
            if model.id in seen:
                problems.append((("models", index, "id"), f"duplicate model id {model.id!r} (also models[{seen[model.id]}])"))
            seen.setdefault(model.id, index)
        defaults = [index for index, model in enumerate(self.models) if model.default]
        if len(defaults) > 1:
            for index in defaults[1:]:
                problems.append((("models", index, "default"), f"only one model may be the default (models[{defaults[0]}] already is)"))
        problems += self._loaded_model_limit()
        personas: dict[str, int] = {}
        for index, persona in enumerate(self.agents.personas):
            if persona.id in personas:
                problems.append((("agents", "personas", index, "id"), f"duplicate persona id {persona.id!r}"))
            personas.setdefault(persona.id, index)
            if persona.model is not None and persona.model not in seen:
                known = ", ".join(sorted(seen))
                problems.append((("agents", "personas", index, "model"), f"unknown model {persona.model!r} (models: {known})"))
        if problems:
            raise CrossFieldError(problems)
        return self

    def _loaded_model_limit(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Models that must be in memory together must fit server.max_loaded_models."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        default = self.models.index(self.default_model)
        if self.models[default].load == "on_demand":
            which = "the default model" if self.models[default].default else "the default model (the first, as none says default: true)"
            problems.append((("models", default, "load"), f"{which} must be load: startup, so that /health proves the box "
                             "can serve requests that name no model (a keep_alive frees its memory when idle)"))
        limit = self.server.max_loaded_models
        if limit is None:
            return problems
        for field, word in (("pinned", "pinned"), ("load", "startup")):
            chosen = [index for index, model in enumerate(self.models)
                      if (model.pinned if field == "pinned" else model.load == "startup")]
            if len(chosen) > limit:
                # Name the first model over the limit: that is the line to change.
                problems.append((("models", chosen[limit], field), f"{len(chosen)} models are {word} "
                                 f"(models[{', '.join(map(str, chosen))}]) but server.max_loaded_models is {limit}"))
        return problems

    @property
    def default_model(self) -> ModelConfig:
        for model in self.models:
            if model.default:
                return model
        return self.models[0]

    def model(self, model_id: str) -> ModelConfig | None:
        return next((model for model in self.models if model.id == model_id), None)
