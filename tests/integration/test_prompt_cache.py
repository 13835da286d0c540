"""The prompt cache on the real engines (issue 16): greedy output with it is the output without it.

Each case runs both engines in-process on the tiny F32 model, the one-at-a-time SingleEngine and the
BatchScheduler with two slots, and compares every output with a fresh run: a new context (batched)
or a freshly cleared sequence (single), with no cache at all. The engines' reports (PromptReuse)
show that the cache really served the prompts, so no case can pass by never using it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from hal0.config.models import ModelConfig
from hal0.inference.batching import BatchScheduler
from hal0.inference.engines import BatchedEngine, SingleEngine, TokenJob
from hal0.inference.prompt_cache import MIB, SHARED, CacheKey, CacheSize, PromptReuse
from hal0.inference.sampling import Sampling
from hal0.inference.tiny_model import write_test_model
from llama_cpp import Llama

from tests.conftest import Server
from tests.integration.test_serving_behaviour import NO_EOS, metric

# Greedy, never ending the turn and never emitting bytes >= 0x80 (see test_serving_behaviour.NO_EOS).
GREEDY = Sampling(temperature=0, logit_bias={2: -100, 4: -100, **{5 + byte: -100 for byte in range(128, 256)}})
SLOT_CTX = 512
BATCH = 64  # small batches: prompts span several chunks, as long prompts do on a real model
FLASH_ATTN = ModelConfig.model_fields["flash_attn"].default  # the attention path hal0 ships with


@dataclass
class Reports:
    """What an engine told its observer."""

    reuse: list[PromptReuse] = field(default_factory=list)
    sizes: list[CacheSize] = field(default_factory=list)

    def prompt_reuse(self, reuse: PromptReuse) -> None:
        self.reuse.append(reuse)

    def prompt_cache_size(self, size: CacheSize) -> None:
        self.sizes.append(size)

    def decode_step(self, generated: int, batch_tokens: int) -> None:
        pass

    @property
    def last(self) -> PromptReuse:
        return self.reuse[-1]

    @property
    def hits(self) -> int:
        return sum(1 for reuse in self.reuse if reuse.ram == "hit")


def _llama(path: Path, n_ctx: int) -> Llama:
    return Llama(str(path), n_ctx=n_ctx, n_batch=BATCH, n_ubatch=BATCH, n_threads=1, swa_full=False,
                 flash_attn=FLASH_ATTN, verbose=False)


@dataclass
class Rig:
    """One engine under test, its reports, and fresh-run references for the same engine kind."""

    kind: str
    engine: SingleEngine | BatchedEngine
    reports: Reports
    reference: Callable[[list[int], int], list[int]]
    tokenize: Callable[[str], list[int]]

    def run(self, prompt: list[int], tokens: int = 12, agent: str | None = None, job: TokenJob | None = None, key: CacheKey = SHARED) -> list[int]:
        job = job or TokenJob(prompt=prompt, max_tokens=tokens, sampling=GREEDY, cancel=threading.Event(), agent=agent, cache_key=key)
        return [sampled.token for sampled in self.engine.generate(job)]

    def same_as_fresh(self, prompt: list[int], tokens: int = 12, agent: str | None = None, key: CacheKey = SHARED) -> list[int]:
        got = self.run(prompt, tokens, agent, key=key)
        assert got == self.reference(prompt, tokens), f"{self.kind}: cached output differs from a fresh run"
        return got


def _rig(kind: str, model: Path, cache_mib: int) -> Iterator[Rig]:
    reports = Reports()
    tokenizer = _llama(model, 64)
    closers: list[Callable[[], None]] = [tokenizer.close]
    if kind == "single":
        llama = _llama(model, SLOT_CTX)
        engine: SingleEngine | BatchedEngine = SingleEngine(llama, None, cache_mib * MIB, reports)
        fresh = _llama(model, SLOT_CTX)
        closers += [llama.close, fresh.close]

        def reference(prompt: list[int], tokens: int) -> list[int]:
            fresh.reset()  # n_tokens 0: the new engine clears the sequence and reads everything
            job = TokenJob(prompt=prompt, max_tokens=tokens, sampling=GREEDY, cancel=threading.Event())
            return [sampled.token for sampled in SingleEngine(fresh, None).generate(job)]
    else:
        scheduler = BatchScheduler(tokenizer, n_slots=2, slot_ctx=SLOT_CTX, n_batch=BATCH, n_ubatch=BATCH, default_seed=None,
                                   prompt_cache_bytes=cache_mib * MIB, observer=reports, prompt_observer=reports)
        engine = BatchedEngine(scheduler)
        closers.insert(0, scheduler.close)

        def reference(prompt: list[int], tokens: int) -> list[int]:
            fresh = BatchScheduler(tokenizer, n_slots=2, slot_ctx=SLOT_CTX, n_batch=BATCH, n_ubatch=BATCH, default_seed=None)
            try:
                job = TokenJob(prompt=prompt, max_tokens=tokens, sampling=GREEDY, cancel=threading.Event())
                return [sampled.token for sampled in BatchedEngine(fresh).generate(job)]
            finally:
                fresh.close()

    def tokenize(text: str) -> list[int]:
        return tokenizer.tokenize(text.encode(), add_bos=True)

    yield Rig(kind, engine, reports, reference, tokenize)
    for close in closers:
        close()


@pytest.fixture(params=["single", "batched"])
def rig(request: pytest.FixtureRequest, tiny_model: Path) -> Iterator[Rig]:
    yield from _rig(request.param, tiny_model, cache_mib=64)


@pytest.fixture(params=["single", "batched"])
def rig_without_ram(request: pytest.FixtureRequest, tiny_model: Path) -> Iterator[Rig]:
    yield from _rig(request.param, tiny_model, cache_mib=0)


def persona(agent: str) -> str:
    """A system prompt of its own per agent (~150 tokens on the tiny model), as the issue's workload has."""
    return f"You are agent {agent}. " + f"hello world the model hal0 {agent} " * 8


def test_interleaved_agents_beyond_the_slots_are_saved_and_restored(rig: Rig) -> None:
    # Three agents over two slots (one for parallel: 1), three turns each with growing history: each
    # returning agent finds its slot taken by another and must come back from the RAM cache.
    history = {agent: persona(agent) for agent in "ABC"}
    for turn in range(3):
        for agent in "ABC":
            history[agent] += f" user {turn}: the {agent} world?"
            prompt = rig.tokenize(history[agent])
            reply = rig.same_as_fresh(prompt, agent=agent)
            if turn > 0:
                assert rig.reports.last.cached > len(rig.tokenize(persona(agent))), rig.reports.last
            history[agent] += f" reply {len(reply)}."  # text of our own, as a client's history would be
    assert rig.reports.hits >= 3, rig.reports.reuse
    assert rig.reports.sizes[-1].entries >= 1 and rig.reports.sizes[-1].bytes > 0


def test_without_the_ram_cache_only_the_slots_serve(rig_without_ram: Rig) -> None:
    rig = rig_without_ram
    prompts = {agent: rig.tokenize(persona(agent) + " question") for agent in "ABC"}
    for agent in "ABCA":
        rig.same_as_fresh(prompts[agent], agent=agent)
    assert all(reuse.ram is None for reuse in rig.reports.reuse)
    assert not rig.reports.sizes or rig.reports.sizes[-1] == CacheSize(0, 0)
    if rig.kind == "single":  # its one sequence went to B, then C: only the words all share remain
        assert rig.reports.last.cached < 24


def test_a_partial_prefix_is_reused_and_the_rest_decoded(rig: Rig) -> None:
    base = rig.tokenize(persona("P") + " first question about the model")
    rig.same_as_fresh(base)
    cut = len(base) - 40  # most of it: a slot keeping less than half would lose to an empty one
    branch = base[:cut] + rig.tokenize(" a different ending")[1:]
    shared = next(index for index, (old, new) in enumerate(zip(base, branch, strict=False)) if old != new)
    assert shared >= cut
    rig.same_as_fresh(branch)
    assert rig.reports.last.cached == shared and rig.reports.last.computed == len(branch) - shared


def test_a_whole_prompt_match_reevaluates_only_the_last_token(rig: Rig) -> None:
    prompt = rig.tokenize(persona("W") + " same again")
    first = rig.same_as_fresh(prompt)
    assert rig.run(prompt) == first
    assert (rig.reports.last.cached, rig.reports.last.computed) == (len(prompt) - 1, 1)


def test_a_restore_serves_the_longest_saved_prefix(rig: Rig) -> None:
    prompts = {agent: rig.tokenize(persona(agent) + " opening") for agent in "XYZ"}
    for agent in "XYZ":
        rig.run(prompts[agent], agent=agent)
    # X's state was pushed out of the slots (by Y, then Z) and saved; its next turn restores it.
    follow_up = prompts["X"] + rig.tokenize(" and a follow-up")[1:]
    rig.same_as_fresh(follow_up, agent="X")
    assert rig.reports.last.ram == "hit", rig.reports.reuse
    assert rig.reports.last.cached >= len(prompts["X"])


@pytest.mark.parametrize("stop", ["cancel", "deadline", "reader"])
def test_a_stopped_request_leaves_exactly_what_it_decoded(rig: Rig, stop: str) -> None:
    prompt = rig.tokenize(persona("S") + " go on")
    cancel = threading.Event()
    job = TokenJob(prompt=prompt, max_tokens=200, sampling=GREEDY, cancel=cancel)
    got: list[int] = []
    if stop == "deadline":  # past already: it ends at its first check, the prompt read or not
        job.deadline = time.perf_counter() - 1
    tokens = rig.engine.generate(job)
    for sampled in tokens:
        got.append(sampled.token)
        if len(got) == 5:
            if stop == "reader":
                break  # the reader stops (a stop string matched, the client went away)
            cancel.set()
    tokens.close()
    assert job.finish == {"cancel": "cancelled", "deadline": "timeout", "reader": "stop"}[stop]
    assert len(got) < 200 and (stop == "deadline") == (len(got) == 0)
    # The continuation a client sends next: what it received, and more.
    continuation = prompt + got + rig.tokenize(" then")[1:]
    rig.same_as_fresh(continuation)
    if stop != "deadline":
        assert rig.reports.last.cached >= len(prompt) + len(got) - 1


def test_a_request_cancelled_before_its_first_token(rig: Rig) -> None:
    prompt = rig.tokenize(persona("C") + " never mind")
    cancel = threading.Event()
    cancel.set()
    assert rig.run(prompt, job=TokenJob(prompt=prompt, max_tokens=20, sampling=GREEDY, cancel=cancel)) == []
    rig.same_as_fresh(prompt + rig.tokenize(" again")[1:])


def test_prompts_at_the_context_limit(rig: Rig) -> None:
    text = persona("L") + " " + "the model " * 200
    prompt = rig.tokenize(text)[: SLOT_CTX - 8]
    long = rig.same_as_fresh(prompt, tokens=100)
    assert len(long) == 8  # the context, not max_tokens, ended it
    # The slot is full to its last cell; prompts one short of the context reuse it, or part of it.
    rig.same_as_fresh(prompt + long[:6], tokens=100)
    assert rig.reports.last.cached >= len(prompt)
    rig.same_as_fresh(prompt[:300] + long[:6], tokens=5)
    assert rig.reports.last.cached >= 300


@pytest.fixture(scope="module")
def swa_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_model(tmp_path_factory.mktemp("models") / "swa.gguf", sliding_window=16)


@pytest.mark.parametrize("kind", ["single", "batched"])
def test_sliding_window_layers_reuse_only_what_they_still_hold(kind: str, swa_model: Path) -> None:
    # llama.cpp keeps a window of 256 cells (16 + the micro-batch, padded) of the sliding-window
    # layers of a sequence, and a restored state only the 16 its last position attends to: a prefix
    # whose cells are gone must be read again, and one whose cells are there is reused.
    for rig in _rig(kind, swa_model, cache_mib=64):
        long = rig.tokenize("hello world the model " * 18)
        assert len(long) > 300
        first = rig.same_as_fresh(long)
        rig.same_as_fresh(long[:100] + rig.tokenize(" a b c hal0")[1:])
        assert rig.reports.last.cached == 0  # positions 85-99 are no longer held
        rig.same_as_fresh(rig.tokenize("zz " * 40))  # pushes the long sequence into the RAM cache
        whole = long + first[:-1]  # exactly what the long request left in its sequence
        rig.same_as_fresh(whole)
        assert rig.reports.last.ram == "hit" and rig.reports.last.cached == len(whole) - 1, rig.reports.reuse
        # The restored state holds only the window before its end: trimming it further is refused.
        rig.same_as_fresh(long + rig.tokenize(" more")[1:])
        assert rig.reports.last.cached < 100  # (another slot may serve the first tokens)


# --- scopes (issue 29): a request reuses only what its own agent, or its persona's system prompt, left --


def _agent(name: str, group: str | None = None, public: int = 0) -> CacheKey:
    return CacheKey(owner=f"agent:{name}", group=group, public=public)


def test_another_agents_kv_is_never_reused(rig: Rig) -> None:
    secret = rig.tokenize(persona("V") + " the vault code is 4721")
    rig.same_as_fresh(secret, agent="alice", key=_agent("alice"))
    rig.same_as_fresh(secret, agent="bob", key=_agent("bob"))  # bob guesses all of it, right
    assert rig.reports.last.cached == 0, rig.reports.reuse  # neither alice's slot nor her saved state served him
    rig.same_as_fresh(secret + rig.tokenize(" next")[1:], agent="alice", key=_agent("alice"))
    assert rig.reports.last.cached >= len(secret) - 1  # alice's own history still serves her


def test_only_the_public_prefix_crosses_within_a_persona(rig: Rig) -> None:
    public = len(rig.tokenize(persona("P")))
    prompt = rig.tokenize(persona("P") + " my own words, not the persona's")
    rig.same_as_fresh(prompt, agent="alice", key=_agent("alice", "persona:p", public))
    rig.same_as_fresh(prompt, agent="bob", key=_agent("bob", "persona:p", public))
    assert rig.reports.last.cached == public, rig.reports.reuse
    rig.same_as_fresh(prompt, agent="carol", key=_agent("carol", "persona:q", public))  # another persona's agent
    assert rig.reports.last.cached == 0, rig.reports.reuse
    rig.same_as_fresh(prompt, agent="dave", key=SHARED)  # the shared scope: anyone's (today's behaviour)
    assert rig.reports.last.cached == len(prompt) - 1, rig.reports.reuse


def test_an_agents_saved_state_is_kept_beside_an_identical_one_of_another_agent(rig: Rig) -> None:
    # alice and bob send the same prompt (greedy: their sequences end the same); when bob's sequence is
    # pushed out, alice's identical saved state must not stand in for his, or his next turn would
    # find nothing of his own, and its speed would tell him someone else had sent his words.
    prompt = rig.tokenize(persona("D") + " the same words")
    first = rig.run(prompt, agent="alice", key=_agent("alice"))
    rig.run(prompt, agent="bob", key=_agent("bob"))
    for agent in ("carol", "dave"):
        rig.run(rig.tokenize(persona(agent) + " something else"), agent=agent, key=_agent(agent))
    rig.same_as_fresh(prompt + first + rig.tokenize(" and on")[1:], agent="bob", key=_agent("bob"))
    assert rig.reports.last.ram == "hit" and rig.reports.last.cached >= len(prompt), rig.reports.reuse


def test_the_cache_key_of_each_scope(tiny_model: Path) -> None:
    from hal0.config.models import PromptCacheScope
    from hal0.inference.generate import cache_key, task_prompt
    from hal0.inference.task import Task
    from hal0.inference.templates import template_for

    llama = _llama(tiny_model, 64)
    try:
        system = {"role": "system", "content": persona("K")}
        task = Task(messages=(system, {"role": "user", "content": "0 and the secret"}), agent="alice", persona="k", public_messages=1)

        def key(scope: PromptCacheScope, task: Task = task) -> CacheKey:
            # What cache_key reads of a LoadedModel (a real one starts its constraint engine's thread).
            model = SimpleNamespace(llama=llama, template=template_for(llama), cache_scope=scope, tool_syntax=None)
            return cache_key(model, task, task_prompt(model, task)[0])  # type: ignore[arg-type]

        public = len(llama.tokenize(f"<|im_start|>system\n{persona('K')}<|im_end|>\n<|im_start|>user\n".encode(), add_bos=True, special=True))
        # The probes' shared tokens end before the user's words, even when these begin as a probe does.
        assert key(PromptCacheScope.AGENT) == CacheKey("agent:alice", "persona:k", public)
        assert key(PromptCacheScope.PERSONA) == CacheKey("persona:k")
        assert key(PromptCacheScope.SHARED) == SHARED
        own = Task(messages=(system, {"role": "user", "content": "hi"}), agent="alice", persona="k", public_messages=0)
        assert key(PromptCacheScope.AGENT, own) == CacheKey("agent:alice", "persona:k", 0)  # its own system message: not public
        alone = Task(prompt="raw text", agent="bob")
        assert key(PromptCacheScope.PERSONA, alone) == key(PromptCacheScope.AGENT, alone) == CacheKey("agent:bob")
    finally:
        llama.close()


# --- through `hal0 serve`: metrics, /v1/models, the Models tab, a model that changes -------------


def _complete(server: Server, prompt: str, agent: str) -> str:
    body = {"prompt": prompt, "max_tokens": 8, "temperature": 0, "logit_bias": NO_EOS}
    response = httpx.post(f"{server.url}/v1/completions", json=body, headers={"X-hal0-Agent": agent}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


def _tiny(path: Path, **fields: object) -> dict[str, object]:
    return {"id": "tiny", "path": str(path), "default": True, "n_ctx": 2048, "n_threads": 1, "prompt_cache_mib": 16, **fields}


def test_metrics_models_and_dashboard_show_the_cache(start_server: Callable[..., Server], tiny_model: Path) -> None:
    server = start_server(models=[_tiny(tiny_model, parallel=2)])
    history = {agent: persona(agent) for agent in "abc"}
    for turn in range(2):
        for agent in "abc":  # three agents, two slots: the RAM cache saves and restores
            history[agent] += f" turn {turn}." + _complete(server, history[agent] + f" turn {turn}.", agent)
    cached, computed = metric(server, 'hal0_prompt_tokens_cached_total{model="tiny"}'), metric(server, 'hal0_prompt_tokens_computed_total{model="tiny"}')
    assert cached > 0 and computed > 0
    assert metric(server, 'hal0_prompt_cache_hits_total{model="tiny"}') >= 1
    assert metric(server, 'hal0_prompt_cache_misses_total{model="tiny"}') >= 1
    assert metric(server, 'hal0_prompt_cache_ram_bytes{model="tiny"}') > 0
    assert metric(server, 'hal0_prompt_cache_ram_entries{model="tiny"}') >= 1
    listed = httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"][0]["prompt_cache"]
    assert listed["hit_ratio"] == pytest.approx(cached / (cached + computed))
    assert listed["cached_tokens"] == cached and listed["ram_hits"] >= 1
    fragment = httpx.get(f"{server.url}/ui/fragments/models", timeout=10).text
    assert f"{round(100 * cached / (cached + computed))}% hit" in fragment


def test_the_cache_goes_with_the_model_instance(start_server: Callable[..., Server], tiny_model: Path, tmp_path: Path) -> None:
    # keep_alive unloads the model; the file at its path is replaced by another model meanwhile. The
    # next load starts with an empty cache: nothing computed by the old weights serves the new ones.
    path = tmp_path / "swapped.gguf"
    path.write_bytes(tiny_model.read_bytes())
    server = start_server(models=[_tiny(path, keep_alive="1s")])
    prompt = persona("k") + " question"
    old = _complete(server, prompt, "k")
    assert _complete(server, prompt, "k") == old
    cached = metric(server, 'hal0_prompt_tokens_cached_total{model="tiny"}')
    assert cached > 0  # the second request was served by the first one's KV
    deadline = time.monotonic() + 20
    while metric(server, 'hal0_model_state{model="tiny",state="unloaded"}') != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(server, 'hal0_model_state{model="tiny",state="unloaded"}') == 1
    assert metric(server, 'hal0_prompt_cache_ram_bytes{model="tiny"}') == 0
    write_test_model(path, seed=1)
    new = _complete(server, prompt, "k")
    assert new != old
    assert metric(server, 'hal0_prompt_tokens_cached_total{model="tiny"}') == cached


# --- through `hal0 serve`: what one agent can learn of another's prompt (issue 29) ---------------

SYSTEM = "You keep the vault team's notes. " + "hello world the model hal0 vault " * 6  # the persona's, public
CACHED = 'hal0_prompt_tokens_cached_total{model="tiny"}'


def _vault(code: str) -> str:
    return f"The vault code is {code}. Keep it safe and tell nobody at all, whoever asks."


def _chat(server: Server, agent: str, text: str) -> dict[str, object]:
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": 8, "temperature": 0, "logit_bias": NO_EOS}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers={"X-hal0-Agent": agent}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def _probe(server: Server, agent: str, text: str) -> tuple[object, ...]:
    """All an agent can read of the cache around one request of its own: the metric's and /v1/models'
    change, and its response's cached-token count if the dialect reports one."""
    before = metric(server, CACHED), httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"][0]["prompt_cache"]
    usage = _chat(server, agent, text)["usage"]
    after = metric(server, CACHED), httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"][0]["prompt_cache"]
    details = usage.get("prompt_tokens_details") or {}  # type: ignore[union-attr]
    return after[0] - before[0], after[1]["cached_tokens"] - before[1]["cached_tokens"], details.get("cached_tokens")


def _bob_probes(start_server: Callable[..., Server], tiny_model: Path, parallel: int, scope: str | None, alice_code: str) -> list[tuple[object, ...]]:
    """Alice (persona `anonymous`, like bob) sends her code; bob then guesses it, right and wrong."""
    model = _tiny(tiny_model, parallel=parallel, **({"prompt_cache_scope": scope} if scope else {}))
    server = start_server(models=[model], agents={"personas": [{"id": "anonymous", "system_prompt": SYSTEM}]})
    try:
        _chat(server, "alice", _vault(alice_code))
        return [_probe(server, "bob", _vault(guess)) for guess in ("4721", "1234", "4721")]
    finally:
        server.stop()


@pytest.mark.parametrize("parallel", [1, 2])
def test_bob_cannot_learn_what_alice_sent_under_the_default_scope(start_server: Callable[..., Server], tiny_model: Path, parallel: int) -> None:
    # Issue 29: bob recovered alice's secret by guessing continuations of a known prefix and reading
    # hal0_prompt_tokens_cached_total. What bob sees must not depend on what alice sent.
    right = _bob_probes(start_server, tiny_model, parallel, None, "4721")
    wrong = _bob_probes(start_server, tiny_model, parallel, None, "9999")
    assert right == wrong
    # The persona's system prompt (config, not alice's) is still shared: bob's first request reuses it.
    tokenizer = _llama(tiny_model, 64)
    try:
        system = len(tokenizer.tokenize(SYSTEM.encode(), add_bos=False))
    finally:
        tokenizer.close()
    assert right[0][0] >= system, right


@pytest.mark.parametrize("parallel", [1, 2])
def test_the_shared_scope_keeps_one_cache_for_all(start_server: Callable[..., Server], tiny_model: Path, parallel: int) -> None:
    # Today's behaviour, for operators whose agents all trust one another: bob's right guess is served
    # from alice's KV (and so, as the README says, this scope is an oracle on what others sent).
    right = _bob_probes(start_server, tiny_model, parallel, "shared", "4721")
    wrong = _bob_probes(start_server, tiny_model, parallel, "shared", "9999")
    assert right[0][0] > wrong[0][0], (right, wrong)  # type: ignore[operator]
