"""The prompt cache: KV state of earlier prompts, reused by the next prompt that begins the same way.

Agent traffic resends its whole history every turn, so most of a prompt was computed before. Two
levels keep that work:

- A KV sequence (a slot of the BatchScheduler, or the one sequence of a SingleEngine) keeps what its
  last request left in it, and records exactly which tokens that is. A new prompt reuses the longest
  common prefix and decodes only the rest: always at least its last token, so the logits it samples
  from are fresh.
- Behind the sequences, a host-RAM LRU of sequence states (`RamCache`, bounded in bytes by
  `models[].prompt_cache_mib`): when a sequence is about to lose its content to another prompt, its
  state is saved there first (llama.cpp's per-sequence state API), and restored into a sequence when
  a prompt sharing a longer prefix with it comes back.

Matching is by tokens, within a scope (`CacheKey`, from `models[].prompt_cache_scope`): a request
reuses KV only from a sequence or state its own agent (or persona, or anyone: the wider scopes)
produced, plus, from others of its persona, the persona's configured system prompt, which is config
and not a secret. Reusing someone else's KV tells the reader (by its speed, by the metrics) that the
someone sent those tokens: a cache shared across agents is an oracle on what they sent. A cache
belongs to one loaded model instance (one llama.cpp context): an unload or a reload drops it with the
context.

Sliding-window attention (Gemma 3's local layers): without `swa_full` llama.cpp keeps only the last
window (plus a micro-batch) of positions of those layers, so a prefix much shorter than what the
sequence holds may be gone, and a restored state keeps only the window before its last position.
`usable_prefix` checks, as llama-server does, that the cells the next position attends to are still
there, and a prefix that fails is not reused.
"""

from __future__ import annotations

import ctypes
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy

log = logging.getLogger("hal0.inference")

MIB = 1024 * 1024
# A sequence about to drop fewer tokens than this is not saved: a reply whose text re-tokenizes
# differently, or the tail cut by a stop string, costs less to read again than a copy of the whole
# state, and would only fill the cache with near-duplicates of what the sequence keeps.
SAVE_MIN_LOST = 32

RamLookup = Literal["hit", "miss"]


@dataclass(frozen=True)
class PromptReuse:
    """How one prompt was served: tokens whose KV came from a cache, tokens left to compute, and the
    RAM cache lookup (None when none was needed: the sequence already held what the prompt extends)."""

    cached: int
    computed: int
    ram: RamLookup | None = None


@dataclass(frozen=True)
class CacheSize:
    """What the RAM cache holds now."""

    bytes: int
    entries: int


class PromptObserver(Protocol):
    """Told how each prompt was served and what the RAM cache holds (metrics), on the engine's thread."""

    def prompt_reuse(self, reuse: PromptReuse) -> None: ...

    def prompt_cache_size(self, size: CacheSize) -> None: ...


@dataclass(frozen=True)
class CacheKey:
    """Whose KV a sequence holds, and what of it another request may reuse.

    A request reuses everything a sequence holds when the sequence's owner is its own (or its key
    is SHARED: one cache for all); from another owner of its `group` (a persona) only the first
    `public` tokens both hold (that persona's configured system prompt); from anyone else nothing.
    """

    owner: str | None = None  # None: the shared scope
    group: str | None = None
    public: int = 0  # leading prompt tokens that are public to `group`

    def reusable(self, held: CacheKey) -> int | None:
        """How many leading tokens of a sequence held under `held` this request may reuse; None: all."""
        if self.owner is None or held.owner == self.owner:
            return None
        if self.group is not None and held.group == self.group:
            return min(self.public, held.public)
        return 0


SHARED = CacheKey()


def as_tokens(tokens: Sequence[int] | numpy.ndarray) -> numpy.ndarray:
    return numpy.asarray(tokens, dtype=numpy.int32)


def common_prefix(held: numpy.ndarray, prompt: numpy.ndarray) -> int:
    """How many leading tokens `held` and `prompt` share."""
    n = min(len(held), len(prompt))
    if n == 0:
        return 0
    differ = numpy.flatnonzero(held[:n] != prompt[:n])
    return int(differ[0]) if len(differ) else n


def usable_prefix(held: numpy.ndarray, prompt: numpy.ndarray, pos_min: int, n_swa: int, limit: int | None = None) -> int:
    """How many of `prompt`'s tokens a sequence holding `held` (its lowest cached position `pos_min`)
    can serve: the common prefix, less the prompt's last token (always decoded again, for fresh
    logits), at most `limit` (what the request's CacheKey allows), or 0 when sliding-window layers no
    longer hold what the next position attends to."""
    same = min(common_prefix(held, prompt), len(prompt) - 1, len(prompt) if limit is None else limit)
    if same <= 0:
        return 0
    # The token at position `same` attends to the cells p with same - p < n_swa (llama.cpp's
    # is_masked_swa), so the lowest it needs is same - n_swa + 1; cells are held from pos_min up.
    # (Chunked windows need no more: their chunk starts at or below that position.)
    if n_swa > 0 and pos_min > max(0, same - n_swa + 1):
        return 0
    return same


def restored_pos_min(tokens: int, pos_min: int, n_swa: int) -> int:
    """The lowest position a saved state holds once restored: llama.cpp drops the cells of
    sliding-window layers that the state's last position no longer attends to."""
    return max(pos_min, tokens - n_swa) if n_swa > 0 else pos_min


@dataclass(eq=False)
class _Entry:
    tokens: numpy.ndarray  # exactly the tokens whose KV the state holds
    state: Any  # ctypes uint8 array from llama_state_seq_get_data
    size: int
    pos_min: int  # the lowest position it holds once restored (see restored_pos_min)
    key: CacheKey = SHARED  # whose it is: who may reuse what of it


class RamCache:
    """Sequence states in host RAM, keyed by their tokens; least recently saved evicted first."""

    def __init__(self, limit_bytes: int, n_swa: int = 0) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.limit_bytes = limit_bytes
        self.n_swa = n_swa
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # by id(entry), oldest first
        self.bytes = 0

    @property
    def enabled(self) -> bool:
        return self.limit_bytes > 0

    @property
    def size(self) -> CacheSize:
        return CacheSize(self.bytes, len(self._entries))

    def best(self, prompt: numpy.ndarray, better_than: int, key: CacheKey = SHARED) -> tuple[_Entry, int] | None:
        """The entry serving the longest prefix of `prompt` that `key` may reuse, if longer than
        `better_than`, and that length."""
        found: tuple[_Entry, int] | None = None
        for entry in self._entries.values():
            same = usable_prefix(entry.tokens, prompt, entry.pos_min, self.n_swa, key.reusable(entry.key))
            if same > (found[1] if found else better_than):
                found = (entry, same)
        return found

    def save(self, ctx: Any, seq: int, tokens: numpy.ndarray, pos_min: int, key: CacheKey = SHARED) -> bool:
        """Copy sequence `seq` (holding exactly `tokens`, produced under `key`) into the cache; False
        if it does not fit. Only entries of the same key stand in for one another: whether another
        agent's entry holds these tokens must change nothing this agent can see."""
        llama_cpp = self._llama_cpp
        if any(entry.key == key and common_prefix(entry.tokens, tokens) == len(tokens) for entry in self._entries.values()):
            return False  # an entry already holds all of it (and maybe more)
        size = int(llama_cpp.llama_state_seq_get_size(ctx, seq))
        if size <= 0 or size > self.limit_bytes:
            return False
        # Entries this one contains are of no further use: any prompt they serve, this serves as well.
        for index, entry in list(self._entries.items()):
            if entry.key == key and common_prefix(entry.tokens, tokens) == len(entry.tokens):
                self._drop(index)
        while self._entries and self.bytes + size > self.limit_bytes:
            self._drop(next(iter(self._entries)))
        state = (ctypes.c_uint8 * size)()
        written = int(llama_cpp.llama_state_seq_get_data(ctx, state, size, seq))
        if written != size:
            log.warning("prompt cache: saving sequence %d wrote %d of %d bytes; not cached", seq, written, size)
            return False
        entry = _Entry(tokens.copy(), state, size, restored_pos_min(len(tokens), pos_min, self.n_swa), key)
        self._entries[id(entry)] = entry
        self.bytes += size
        return True

    def restore(self, ctx: Any, entry: _Entry, seq: int) -> bool:
        """Load `entry` into sequence `seq` (which the caller has cleared) and take it out of the cache:
        its state lives in the sequence again, and is saved anew (with what it gained meanwhile) when
        the sequence is next taken for another prompt, so keeping it too would hold it twice."""
        self._drop(id(entry))
        loaded = int(self._llama_cpp.llama_state_seq_set_data(ctx, entry.state, entry.size, seq))
        if loaded != entry.size:
            log.warning("prompt cache: restoring into sequence %d read %d of %d bytes", seq, loaded, entry.size)
            return False
        return True

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _drop(self, key: int) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size


class PromptCache:
    """Prefix reuse for the KV sequences of one llama.cpp context, with the RAM cache behind them."""

    def __init__(self, ctx: Any, model: Any, limit_bytes: int, observer: PromptObserver | None = None) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._context = ctx
        self._memory = llama_cpp.llama_get_memory(ctx)
        self.n_swa = int(llama_cpp.llama_model_n_swa(model))
        self.ram = RamCache(limit_bytes, self.n_swa)
        self._observer = observer

    def pos_min(self, seq: int) -> int:
        return int(self._llama_cpp.llama_memory_seq_pos_min(self._memory, seq))

    def usable(self, seq: int, held: numpy.ndarray, prompt: numpy.ndarray, limit: int | None = None) -> int:
        """How many of `prompt`'s tokens sequence `seq`, holding `held`, would serve (at most `limit`)."""
        return usable_prefix(held, prompt, self.pos_min(seq), self.n_swa, limit) if len(held) else 0

    def prepare(self, seq: int, held: numpy.ndarray, prompt: numpy.ndarray, held_key: CacheKey = SHARED, key: CacheKey = SHARED) -> int:
        """Make sequence `seq`, whose KV holds exactly `held` (produced under `held_key`), ready to
        read `prompt` for a request under `key`.

        Returns how many leading prompt tokens it now holds (its KV is trimmed to them, fewer than
        the prompt, and no more than `key` may reuse): the caller decodes the rest. On any failure
        the sequence is cleared and 0 returned, so what the caller records always matches the KV.
        """
        llama_cpp, memory = self._llama_cpp, self._memory
        pos_min = self.pos_min(seq) if len(held) else -1
        keep = usable_prefix(held, prompt, pos_min, self.n_swa, key.reusable(held_key)) if len(held) else 0
        lost = len(held) - keep
        lookup: RamLookup | None = None
        found = None
        # Only a sequence that is empty or would lose content asks the RAM cache: one the prompt
        # extends already serves all the prompt's past.
        if self.ram.enabled and keep < len(prompt) - 1 and (lost > 0 or not len(held)):
            found = self.ram.best(prompt, keep, key)
            lookup = "hit" if found else "miss"
            if found:
                lost = len(held)  # a restore replaces all of it
        if self.ram.enabled and lost >= SAVE_MIN_LOST:
            self.ram.save(self._context, seq, held, pos_min, held_key)
        if found:
            entry, same = found
            llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
            # What the restore really kept decides, whatever was expected of it.
            restored = self.ram.restore(self._context, entry, seq)
            keep = same if restored and usable_prefix(entry.tokens, prompt, self.pos_min(seq), self.n_swa, key.reusable(entry.key)) == same else 0
        if keep == 0 or not llama_cpp.llama_memory_seq_rm(memory, seq, keep, -1):
            # Removing a whole sequence never fails; a partial removal may (recurrent models).
            llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
            keep = 0
        if self._observer is not None:
            self._observer.prompt_reuse(PromptReuse(keep, len(prompt) - keep, lookup))
            if lookup is not None or lost >= SAVE_MIN_LOST:
                self._observer.prompt_cache_size(self.ram.size)
        return keep

    def clear(self) -> None:
        """Drop the RAM cache (the context goes away with the model)."""
        self.ram.clear()
        if self._observer is not None:
            self._observer.prompt_cache_size(self.ram.size)
