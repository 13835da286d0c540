"""BM25 over one namespace: FTS5's bm25() with statistics that only the caller's items give.

FTS5's own bm25() takes the row count, each phrase's document frequency and the average row
length from the one index every agent shares, so another agent storing items with a word moved the
caller's scores for its own items (and told it, by the change, that someone had). This module
computes the same formula (fts5_aux.c: k1 1.2, b 0.75, IDF floored at 1e-6, a row's length over all
its columns, per-column weights on the hit counts) from the caller's namespace alone: on a store
holding one namespace its scores are bm25()'s.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

K1 = 1.2
B = 0.75
_IDF_FLOOR = 1e-6


@dataclass(frozen=True)
class Instance:
    """One occurrence of a token in the index: the row, its column and the token's position there."""

    row: int
    column: str
    offset: int


def phrase_hits(tokens: Sequence[Sequence[Instance]], weights: Mapping[str, float]) -> dict[int, float]:
    """Per row, the weighted count of the phrase's occurrences: places where its tokens (their
    instances given in phrase order) follow one another in one column, as FTS5 counts phrase hits."""
    if not tokens:
        return {}
    later = [{(hit.row, hit.column, hit.offset) for hit in instances} for instances in tokens[1:]]
    hits: dict[int, float] = defaultdict(float)
    for start in tokens[0]:
        if all((start.row, start.column, start.offset + step) in positions for step, positions in enumerate(later, 1)):
            hits[start.row] += weights.get(start.column, 1.0)
    return hits


def sizes_of(blob: bytes) -> int:
    """A row's length in tokens over all its columns, from FTS5's docsize record (one varint a column)."""
    if max(blob, default=0) < 0x80:  # every column under 128 tokens: one byte each
        return sum(blob)
    total = 0
    index = 0
    while index < len(blob):
        value, index = _varint(blob, index)
        total += value
    return total


def _varint(blob: bytes, index: int) -> tuple[int, int]:
    """SQLite's varint (big-endian, 7 bits a byte, the ninth byte whole), as FTS5 writes it."""
    value = 0
    for position in range(index, min(index + 8, len(blob))):
        byte = blob[position]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, position + 1
    if index + 8 < len(blob):
        return (value << 8) | blob[index + 8], index + 9
    return value, len(blob)


def scores(rows: Iterable[int], hits: Sequence[Mapping[int, float]], lengths: Mapping[int, int]) -> dict[int, float]:
    """bm25() of each of `rows` (lower is better, as FTS5's): `hits` per phrase (every row of the
    namespace that holds it), `lengths` of every row of the namespace."""
    count = len(lengths)
    # A row with a hit has a token, so the average is never 0 where it is used.
    average = (sum(lengths.values()) / count if count else 0.0) or 1.0
    idf = [_idf(count, len(phrase)) for phrase in hits]
    result: dict[int, float] = {}
    for row in rows:
        score = 0.0
        length = float(lengths.get(row, 0))
        for weight, phrase in zip(idf, hits, strict=True):
            frequency = phrase.get(row, 0.0)
            score += weight * ((frequency * (K1 + 1.0)) / (frequency + K1 * (1 - B + B * length / average)))
        result[row] = -1.0 * score
    return result


def _idf(count: int, holding: int) -> float:
    idf = math.log((count - holding + 0.5) / (holding + 0.5))
    return idf if idf > 0.0 else _IDF_FLOOR
