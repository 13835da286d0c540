"""Output constraints on llguidance: a JSON schema, the tool-call format or a grammar becomes a
token mask at every step of a generation.

Why llguidance (the Rust engine behind the guidance library and llama.cpp's optional LLGuidance
build): it implements JSON Schema far beyond hal0's former converter (`pattern`, `format`, `oneOf`,
`allOf`, schema-valued `additionalProperties` and `patternProperties`, numeric bounds of any kind),
it refuses what it cannot enforce instead of dropping it, its per-step work is bounded by explicit
limits, it computes a mask in well under a millisecond from a lexer over the token trie (llama.cpp's
grammar sampler walks every candidate of the vocabulary each step: 262,144 for Gemma), and its wheel
has no dependencies. Regex and Lark grammars come with it.

One rule for every door (chat `response_format`, Responses `text.format`, tool `parameters`,
Messages `input_schema`, `json_object`):
- what is accepted is enforced exactly, by the mask, at every step;
- annotations, vendor extensions and unknown keywords are ignored, as JSON Schema says of keywords it
  does not define; so is a `format` llguidance does not implement (formats are annotations unless a
  validator knows them: OpenAPI's `int64`, `byte`, `password`...);
- a keyword llguidance knows but cannot enforce (`not`, `if`/`then`/`else`, `uniqueItems`,
  `contains`, `dependentRequired`, `propertyNames`, `unevaluatedProperties`, ...) or a schema past
  the limits below is refused before anything runs: SchemaError, a 400 `unsupported_schema` naming
  the keyword, its JSON path and the request's own name for the schema.

Cost is bounded and paid once: `LIMITS` caps the grammar's size, the lexer's states and the work of
one step (a step over budget ends that request); a compiled grammar is cached by its text, and each
request starts from a cheap copy of the cached matcher.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy

from hal0.inference.task import GenerationFailed, InvalidTask

# llguidance's limits (its defaults where they suit a small shared box). Measured on a 2-core machine:
# a 50,000-value enum compiles in about 0.8 s and masks in 0.2 ms; every schema of the test corpus
# masks in under 1 ms a step.
LIMITS = {
    "max_grammar_size": 500_000,  # symbols in the grammar's productions
    "max_lexer_states": 50_000,  # lexer DFA states (1-2 kB each): at most ~100 MB per grammar
    "initial_lexer_fuel": 1_000_000,  # regex work to build the lexer (~20 ms)
    "step_lexer_fuel": 200_000,  # lexer work in one step's mask (~15 ms)
    "step_max_items": 50_000,  # Earley items in one step (~2.5 ms)
}
# A request's schema text is bounded by the body limit; a compiled grammar cache holds this many.
_CACHE_SIZE = 256
_MATCHERS_PER_MODEL = 32

# What is compact JSON and what the tool-call parser reads: no whitespace between tokens.
_JSON_OPTIONS = {"whitespace_flexible": False}

# Keywords whose value is a schema, a list of schemas, or a map of name -> schema: where a schema's
# subschemas are, to find the JSON path of a refused keyword.
_SCHEMA_VALUED = {"items", "additionalProperties", "additionalItems", "not", "if", "then", "else", "contains",
                  "propertyNames", "unevaluatedItems", "unevaluatedProperties"}
_SCHEMA_LISTS = {"anyOf", "allOf", "oneOf", "prefixItems"}
_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}


class SchemaError(InvalidTask):
    """A schema or grammar hal0 cannot enforce: names the keyword and where it is."""

    def __init__(self, message: str, *, param: str, code: str = "unsupported_schema") -> None:
        super().__init__(message, param=param, code=code)


@dataclass(frozen=True)
class Grammar:
    """A validated llguidance grammar (its serialized text) and the request's name for its source."""

    text: str
    param: str
    schema: Any = None  # for a schema's grammar: the schema as enforced (unknown formats dropped)


def _limits() -> Any:
    from llguidance import LLParserLimits

    return LLParserLimits(**LIMITS, verbose_errors=False)


def _paths(schema: Any, at: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """Every schema object inside `schema` with its path, depth first in document order."""
    if not isinstance(schema, dict):
        return
    yield at, schema
    for key, value in schema.items():
        if key in _SCHEMA_VALUED:
            if isinstance(value, list):  # draft-04 `items` as a list
                for index, item in enumerate(value):
                    yield from _paths(item, (*at, key, index))
            else:
                yield from _paths(value, (*at, key))
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            for index, item in enumerate(value):
                yield from _paths(item, (*at, key, index))
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            for name, item in value.items():
                yield from _paths(item, (*at, key, name))


def _path(parts: tuple[str | int, ...]) -> str:
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)


def _where(schema: Any, keyword: str) -> str:
    """The JSON path of the first schema object that uses `keyword` ('$' when none is found)."""
    for at, node in _paths(schema):
        if keyword in node:
            return _path((*at, keyword))
    return "$"


def _refusal(schema: Any, error: str, param: str) -> SchemaError:
    """llguidance's error, said in hal0's words: the keyword, its path, the request's name for it."""
    if match := re.search(r'Unimplemented keys: \["([^"]+)"', error):
        keyword = match.group(1)
        return SchemaError(f"{param} uses {keyword!r} at {_where(schema, keyword)}, which hal0 cannot enforce", param=param)
    if match := re.search(r"float range: min=(\S+), max=(\S+)", error):
        keyword = "maximum" if match.group(2) != "None" else "minimum"
        return SchemaError(f"{param} has a number range hal0 cannot enforce ({keyword!r} at {_where(schema, keyword)}): {error}", param=param)
    return SchemaError(f"{param} cannot be enforced: {error}", param=param)


def _without_unknown_formats(schema: Any, unknown: str) -> Any:
    """`schema` with every `format: <unknown>` removed (an annotation: JSON Schema validators that do
    not know a format accept any string for it)."""
    if isinstance(schema, dict):
        return {key: _without_unknown_formats(value, unknown) for key, value in schema.items() if not (key == "format" and value == unknown)}
    if isinstance(schema, list):
        return [_without_unknown_formats(item, unknown) for item in schema]
    return schema


def _validated(text: str, source: Any, param: str) -> Grammar:
    from llguidance import LLMatcher

    failed, messages = LLMatcher.validate_grammar_with_warnings(text, None, limits=_limits())
    if failed:
        raise _refusal(source, messages[0] if messages else "invalid grammar", param)
    return Grammar(text, param, source)


_OPEN_KEYS = ("additionalProperties", "patternProperties", "unevaluatedProperties", "allOf")


def _closed(schema: Any, in_all_of: bool = False) -> Any:
    """`schema` with no keys beyond its `properties` where it says nothing of other keys: a reply is a
    subset of what the schema allows (every one validates), as llama.cpp's converter and OpenAI's strict
    mode make it, instead of a model inventing keys until max_tokens. An object that names
    `additionalProperties`, `patternProperties` or `unevaluatedProperties`, and the branches of an
    `allOf` (which other branches may add keys to), are left as written."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_closed(item, in_all_of=key == "allOf") for item in value]
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _closed(item) for name, item in value.items()}
        elif key in _SCHEMA_VALUED and key not in ("not", "if", "then", "else"):
            out[key] = [_closed(item) for item in value] if isinstance(value, list) else _closed(value)
        else:
            out[key] = value
    if "properties" in out and not in_all_of and not any(key in out for key in _OPEN_KEYS):
        out["additionalProperties"] = False
    return out


def _schema_grammar(schema: Any, param: str) -> Grammar:
    from llguidance import LLMatcher

    if schema is False:
        raise SchemaError(f"{param} is `false`: no value can match it", param=param)
    if not isinstance(schema, dict | bool):
        raise SchemaError(f"{param} must be a JSON Schema (an object), not {type(schema).__name__}", param=param)
    schema = _closed(schema)
    for _ in range(64):  # one pass per distinct unknown format, at most
        try:
            text = LLMatcher.grammar_from_json_schema(schema, defaults=_JSON_OPTIONS)
        except ValueError as error:
            raise SchemaError(f"{param} is not a valid schema: {error}", param=param) from None
        try:
            return _validated(text, schema, param)
        except SchemaError as error:
            if match := re.search(r"Unknown format: (\S+)", str(error)):
                schema = _without_unknown_formats(schema, match.group(1))
                continue
            raise
    raise SchemaError(f"{param} uses too many unknown formats", param=param)


@lru_cache(maxsize=_CACHE_SIZE)
def _cached_schema(text: str, param: str) -> Grammar | SchemaError:
    try:
        return _schema_grammar(json.loads(text), param)
    except SchemaError as error:
        return error  # refusals are cached too: an agent resending a bad schema costs nothing


def schema_grammar(schema: Any, param: str) -> Grammar:
    """The grammar of JSON that validates against `schema`; SchemaError if it cannot be enforced.
    `param` is where the request held the schema, in its dialect's words. Cached by the schema's text."""
    try:
        text = json.dumps(schema, allow_nan=False)  # key order kept: it is the output's key order
    except (TypeError, ValueError, RecursionError) as error:
        raise SchemaError(f"{param} is not a JSON schema: {error}", param=param) from None
    found = _cached_schema(text, param)
    if isinstance(found, SchemaError):
        raise SchemaError(str(found), param=param)
    return found


def embedded_schema(schema: Any, separators: tuple[str, str] | None = None) -> str:
    """`schema` as a Lark `%json` body with hal0's compact-JSON options (for grammars that embed
    schemas, like the tool-call format), or with the given (item, key) separators: a model's
    native calls are written as its template writes them (`{"city": "Paris"}`)."""
    own = _JSON_OPTIONS if separators is None else {**_JSON_OPTIONS, "item_separator": separators[0], "key_separator": separators[1]}
    options = {**(schema.get("x-guidance") or {}), **own} if isinstance(schema, dict) else own
    body = {**schema, "x-guidance": options} if isinstance(schema, dict) else ({"x-guidance": own} if schema is True else schema)
    return json.dumps(body, separators=(",", ":"))


@lru_cache(maxsize=_CACHE_SIZE)
def _cached_lark(lark: str, param: str) -> Grammar | SchemaError:
    from llguidance import LLMatcher

    try:
        return _validated(LLMatcher.grammar_from_lark(lark), None, param)
    except SchemaError as error:
        return error


def lark_grammar(lark: str, param: str) -> Grammar:
    """A Lark grammar (llguidance's dialect; `%json` embeds a schema: check those with
    schema_grammar first, which names a refused keyword's path). Cached by its text."""
    found = _cached_lark(lark, param)
    if isinstance(found, SchemaError):
        raise SchemaError(str(found), param=param)
    return found


@lru_cache(maxsize=_CACHE_SIZE)
def _cached_text_grammar(text: str, param: str) -> Grammar | SchemaError:
    from llguidance import LLMatcher
    from llguidance.gbnf_to_lark import any_to_lark

    try:
        lark = any_to_lark(text)
    except Exception as error:  # noqa: BLE001 - the converter raises its own and Python's errors on bad input
        return SchemaError(f"{param} is not a valid GBNF or Lark grammar: {error}", param=param, code="invalid_grammar")
    grammar = LLMatcher.grammar_from_lark(lark)
    failed, messages = LLMatcher.validate_grammar_with_warnings(grammar, None, limits=_limits())
    if failed:
        return SchemaError(f"{param} cannot be enforced: {messages[0] if messages else 'invalid grammar'}", param=param, code="invalid_grammar")
    return Grammar(grammar, param)


def text_grammar(text: str, param: str) -> Grammar:
    """A request's own grammar: GBNF (llama-server's `grammar` field) or llguidance's Lark, converted
    with llguidance's converter. A grammar that does not parse is a 400 (`invalid_grammar`), never
    ignored (llama-server's known bug: a grammar that fails to parse runs unconstrained). Cached."""
    found = _cached_text_grammar(text, param)
    if isinstance(found, SchemaError):
        raise SchemaError(str(found), param=param, code=found.code)
    return found


def _tokenizer_of(model: Any) -> tuple[Any, list[bytes]]:
    """llguidance's tokenizer for a llama.cpp model: every token's bytes (control tokens marked as
    special, as llguidance.llamacpp does), with every end-of-generation token allowed where the
    grammar may end. Written here rather than through llguidance.llamacpp, whose loop calls a
    deprecated llama.cpp function that warns on each of a 262k vocabulary's tokens (12 s for Gemma)."""
    import ctypes

    import llama_cpp
    from llguidance import LLTokenizer

    vocab = model.vocab
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    size = 16 * 1024
    buffer = ctypes.create_string_buffer(size + 1)
    pieces: list[bytes] = []
    ends: list[int] = []
    control, user = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL, llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    for token in range(n_vocab):
        length = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, True)
        piece = buffer.raw[: max(length, 0)]
        attr = llama_cpp.llama_vocab_get_attr(vocab, token)
        if attr & control or (attr & user and piece.startswith(b"<") and piece.endswith(b">")):
            piece = b"\xff" + piece  # llguidance's mark of a special token: never matched as text
        pieces.append(piece)
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            ends.append(token)
    tokenize = ctypes.cast(llama_cpp.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
    tokenizer = LLTokenizer.from_llamacpp(tokens=pieces, vocab_ptr=vocab, tokenize_fptr=tokenize,
                                          eos_token=ends or llama_cpp.llama_vocab_eos(vocab), slices=None)
    return tokenizer, pieces


class Constraints:
    """One loaded model's constraint engine: its llguidance tokenizer (built once, on a thread of its
    own from load on: about a second for a 262k vocabulary) and its compiled matchers (an LRU)."""

    def __init__(self, model: Any) -> None:
        import llama_cpp

        self._llama_model = model
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(model.vocab)
        self._tokenizer: Any = None
        self._pieces: list[bytes] = []  # each token's bytes; a special token's marked with a leading 0xFF
        self._specials: dict[str, int] | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._matchers: OrderedDict[str, Any] = OrderedDict()
        threading.Thread(target=self._build, name="hal0-constraints", daemon=True).start()

    def _build(self) -> None:
        try:
            self._tokenizer, self._pieces = _tokenizer_of(self._llama_model)
        except (RuntimeError, ValueError, OSError) as error:  # reported to every request that needs it
            self._error = error
        finally:
            self._ready.set()

    def close(self) -> None:
        """Before the model's Llama is freed: wait for the vocabulary read (a few seconds at most)."""
        self._ready.wait(timeout=120)
        self._tokenizer = None
        with self._lock:
            self._matchers.clear()

    def _wait(self) -> None:
        self._ready.wait()
        if self._tokenizer is None and self._error is None:
            raise GenerationFailed("the model was unloaded")
        if self._error is not None:
            raise GenerationFailed(f"the constraint engine could not read this model's vocabulary: {self._error}")

    def specials(self) -> dict[str, int]:
        """The model's special tokens by text (`<tool_call>` -> its id): a grammar names them as tokens."""
        self._wait()
        if self._specials is None:
            found: dict[str, int] = {}
            for token, piece in enumerate(self._pieces):
                if piece.startswith(b"\xff") and len(piece) > 1:
                    found.setdefault(piece[1:].decode("utf-8", "replace"), token)
            self._specials = found
        return self._specials

    def lazy(self, grammar: Grammar, find: Callable[[bytes, int], int | None], skip: Callable[[bytes], int | None]) -> LazyConstraint:
        """A constraint that holds from the moment the reply opens what `grammar` describes (found
        by `find` in the reply's bytes, searched from where `skip` says): free text until then."""
        inner = self.start(grammar)
        pieces = self._pieces
        tokenizer = self._tokenizer
        return LazyConstraint(inner, find, skip, lambda token: pieces[token].removeprefix(b"\xff"), tokenizer.tokenize_bytes)

    def start(self, grammar: Grammar) -> TokenConstraint:
        """A fresh constraint for one generation (on the request's thread, never the decode loop's)."""
        from llguidance import LLMatcher

        self._wait()
        with self._lock:
            template = self._matchers.get(grammar.text)
            if template is not None:
                self._matchers.move_to_end(grammar.text)
        if template is None:
            template = LLMatcher(self._tokenizer, grammar.text, log_level=0, limits=_limits())
            if template.is_error():
                raise SchemaError(f"{grammar.param} cannot be enforced: {template.get_error()}", param=grammar.param)
            with self._lock:
                self._matchers[grammar.text] = template
                while len(self._matchers) > _MATCHERS_PER_MODEL:
                    self._matchers.popitem(last=False)
        return TokenConstraint(template.deep_copy(), self.n_vocab)


class TokenConstraint:
    """One generation's matcher: the mask before each sample, the sampled token after."""

    def __init__(self, matcher: Any, n_vocab: int) -> None:
        self._matcher = matcher
        self._n_vocab = n_vocab
        self._bits = numpy.zeros((n_vocab + 31) // 32, dtype=numpy.int32)

    def mask(self, logits: numpy.ndarray) -> None:
        """Set to -inf, in place, the logits of every token the grammar does not allow next."""
        self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        if self._matcher.is_error():
            raise GenerationFailed(f"the output constraint stopped: {self._matcher.get_error()}")
        words = numpy.flatnonzero(self._bits)
        if len(words) * 8 < len(self._bits):
            # Few tokens allowed (most steps of JSON): keep them, clear the rest; far cheaper than a
            # boolean mask over the whole vocabulary.
            bits = numpy.unpackbits(self._bits[words].view(numpy.uint8), bitorder="little").reshape(len(words), 32)
            rows, columns = numpy.nonzero(bits)
            allowed = words[rows] * 32 + columns
            allowed = allowed[allowed < self._n_vocab]
            kept = logits[allowed]
            logits.fill(-numpy.inf)
            logits[allowed] = kept
        else:
            allowed_mask = numpy.unpackbits(self._bits.view(numpy.uint8), bitorder="little")[: self._n_vocab].view(bool)
            logits[~allowed_mask] = -numpy.inf

    def try_accept(self, tokens: list[int]) -> bool:
        """Advance past `tokens` if the grammar takes them all (a lazy constraint's opening)."""
        return bool(self._matcher.try_consume_tokens(tokens) == len(tokens)) and not self._matcher.is_error()

    def accept(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            raise GenerationFailed(f"the output constraint refused token {token}: {self._matcher.get_error()}")

    @property
    def finished(self) -> bool:
        return bool(self._matcher.is_stopped())

    @property
    def accepting(self) -> bool:
        """What came so far is a whole reply (more may still follow)."""
        return bool(self._matcher.is_accepting())


class LazyConstraint:
    """A constraint that waits for its trigger (llama.cpp's lazy grammar): while the reply is free
    text nothing is masked; once `find` sees the opening of a tool call in the reply's bytes, the
    matcher is fed the reply from that point on and constrains every later token. If the opening
    cannot be fed (the model wrote it in a way the grammar does not take), the reply stays free and
    the parser reads it as text."""

    def __init__(
        self,
        inner: TokenConstraint,
        find: Callable[[bytes, int], int | None],
        skip: Callable[[bytes], int | None],
        piece: Callable[[int], bytes],
        tokenize: Callable[[bytes], list[int]],
    ) -> None:
        self._inner = inner
        self._find, self._skip, self._piece, self._tokenize = find, skip, piece, tokenize
        self._reply = bytearray()  # grown in place: a long free reply is never copied whole per token
        self._tokens: list[tuple[int, int]] = []  # (token, where its bytes start in the reply)
        self.state = "waiting"  # -> "active" once triggered, or "free" if the opening could not be fed

    def mask(self, logits: numpy.ndarray) -> None:
        if self.state == "active":
            self._inner.mask(logits)

    def accept(self, token: int) -> None:
        if self.state == "active":
            self._inner.accept(token)
            return
        if self.state == "free":
            return
        self._tokens.append((token, len(self._reply)))
        self._reply += self._piece(token)
        start = self._skip(self._reply)
        if start is None:
            return
        at = self._find(self._reply, start)
        if at is not None:
            self._trigger(at)

    def _trigger(self, at: int) -> None:
        """Feed the matcher the reply from byte `at`: the tokens from there, the part of a token that
        straddles it as text."""
        feed: list[int] = []
        for index, (token, begins) in enumerate(self._tokens):
            ends = self._tokens[index + 1][1] if index + 1 < len(self._tokens) else len(self._reply)
            if ends <= at:
                continue
            feed.extend([token] if begins >= at else self._tokenize(bytes(self._reply[at:ends])))
        self.state = "active" if self._inner.try_accept(feed) else "free"

    @property
    def finished(self) -> bool:
        return self.state == "active" and self._inner.finished

    @property
    def accepting(self) -> bool:
        return self.state != "active" or self._inner.accepting
