"""The namespaced memory store over SQLite (WAL) with FTS5 full-text search.

Every public method takes the namespace first and every statement filters on it, so isolation
is a property of this one file rather than of each caller. Search ranks by BM25 computed over the
caller's namespace alone (ranking.py), never over the index all namespaces share. One connection serves all threads
under a lock: memory operations are short and the lock keeps SQLite's single writer simple.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from hal0.memory import ranking
from hal0.memory.errors import InvalidInputError, ItemNotFoundError, LimitExceededError
from hal0.memory.model import Item, Limits, Page, clean_tags, page_size
from hal0.memory.query import decode_cursor, encode_cursor, fts_query, query_words
from hal0.store import Migration, connect, migrate

# How migration 1 made items_fts split text into tokens; a recall's words are split the same way
# (MemoryStore._phrases), so they name the index's own terms.
TOKENIZE = "unicode61 remove_diacritics 2"
MIGRATIONS = (
    Migration(
        1,
        """
        -- AUTOINCREMENT: a deleted seq is never reused, so a list cursor never skips or repeats.
        CREATE TABLE items (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            namespace TEXT NOT NULL,
            text TEXT NOT NULL,
            tags TEXT NOT NULL DEFAULT '[]',
            metadata TEXT,
            created REAL NOT NULL,
            updated REAL NOT NULL
        );
        CREATE INDEX items_namespace_seq ON items(namespace, seq);
        CREATE TABLE item_tags (
            namespace TEXT NOT NULL,
            tag TEXT NOT NULL,
            seq INTEGER NOT NULL REFERENCES items(seq) ON DELETE CASCADE,
            PRIMARY KEY (namespace, tag, seq)
        ) WITHOUT ROWID;
        CREATE INDEX item_tags_seq ON item_tags(seq);
        -- External-content FTS: the text lives once, in items; triggers keep the index in step.
        CREATE VIRTUAL TABLE items_fts USING fts5(
            text, tags, content='items', content_rowid='seq', tokenize='unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER items_ai AFTER INSERT ON items BEGIN
            INSERT INTO items_fts(rowid, text, tags) VALUES (new.seq, new.text, new.tags);
        END;
        CREATE TRIGGER items_ad AFTER DELETE ON items BEGIN
            INSERT INTO items_fts(items_fts, rowid, text, tags) VALUES ('delete', old.seq, old.text, old.tags);
        END;
        CREATE TRIGGER items_au AFTER UPDATE OF text, tags ON items BEGIN
            INSERT INTO items_fts(items_fts, rowid, text, tags) VALUES ('delete', old.seq, old.text, old.tags);
            INSERT INTO items_fts(rowid, text, tags) VALUES (new.seq, new.text, new.tags);
        END;
        """,
    ),
)

_COLUMNS = "items.seq, items.id, items.text, items.tags, items.metadata, items.created, items.updated"
_TAG_FILTER = " AND EXISTS (SELECT 1 FROM item_tags t WHERE t.namespace = items.namespace AND t.tag = ? AND t.seq = items.seq)"
# BM25 column weights: a word in the text counts twice a word in the tags.
_WEIGHTS = {"text": 2.0, "tags": 1.0}


class MemoryStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = connect(self.path)
        self._lock = threading.Lock()
        migrate(self._conn, MIGRATIONS)
        # Each token occurrence of the index, by term: the hits the ranking counts, per namespace.
        with self._conn:
            self._conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.items_vocab USING fts5vocab(main, items_fts, instance)")
        # A scratch index with the same tokenizer, to split a recall's words exactly as items_fts does.
        self._words = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._words.execute(f"CREATE VIRTUAL TABLE words USING fts5(word, tokenize='{TOKENIZE}')")
        self._words.execute("CREATE VIRTUAL TABLE words_vocab USING fts5vocab(words, instance)")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._words.close()

    # -- writes ---------------------------------------------------------------------------------

    def add(self, namespace: str, text: str, limits: Limits, tags: list[str] | None = None,
            metadata: dict[str, Any] | None = None) -> Item:
        clean = clean_tags(tags)
        meta = _metadata_json(metadata, limits)
        _check_text(text, limits)
        now = time.time()
        item_id = "mem_" + secrets.token_hex(8)
        with self._lock, self._conn:
            count = self._conn.execute("SELECT count(*) FROM items WHERE namespace = ?", (namespace,)).fetchone()[0]
            if count >= limits.max_items:
                raise LimitExceededError(
                    f"this agent's memory is full ({count} of {limits.max_items} items, memory.max_items_per_agent); "
                    "forget some items first",
                    code="memory_full",
                    setting="memory.max_items_per_agent",
                )
            seq = self._conn.execute(
                "INSERT INTO items (id, namespace, text, tags, metadata, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (item_id, namespace, text, json.dumps(list(clean)), meta, now, now),
            ).lastrowid
            self._conn.executemany(
                "INSERT INTO item_tags (namespace, tag, seq) VALUES (?, ?, ?)", [(namespace, tag, seq) for tag in clean]
            )
        return Item(item_id, text, clean, metadata, now, now)

    def update(self, namespace: str, item_id: str, limits: Limits, *, text: str | None = None,
               tags: list[str] | None = None, metadata: dict[str, Any] | None = None,
               replace_metadata: bool = False) -> Item:
        """Change the given fields; `replace_metadata` distinguishes "set to null" from "leave as is"."""
        if text is not None:
            _check_text(text, limits)
        clean = clean_tags(tags) if tags is not None else None
        meta = _metadata_json(metadata, limits) if replace_metadata else None
        with self._lock, self._conn:
            row = self._row(namespace, item_id)
            sets = ["updated = ?"]
            values: list[Any] = [time.time()]
            if text is not None:
                sets.append("text = ?")
                values.append(text)
            if clean is not None:
                sets.append("tags = ?")
                values.append(json.dumps(list(clean)))
                self._conn.execute("DELETE FROM item_tags WHERE seq = ?", (row["seq"],))
                self._conn.executemany(
                    "INSERT INTO item_tags (namespace, tag, seq) VALUES (?, ?, ?)",
                    [(namespace, tag, row["seq"]) for tag in clean],
                )
            if replace_metadata:
                sets.append("metadata = ?")
                values.append(meta)
            sql = f"UPDATE items SET {', '.join(sets)} WHERE seq = ?"  # noqa: S608 - constant SQL fragments only; values are bound
            self._conn.execute(sql, (*values, row["seq"]))
            return _item(self._row(namespace, item_id))

    def delete(self, namespace: str, item_id: str) -> None:
        with self._lock, self._conn:
            row = self._row(namespace, item_id)
            self._conn.execute("DELETE FROM items WHERE seq = ?", (row["seq"],))

    def forget_all(self, namespace: str) -> int:
        """Delete every item of one namespace; returns how many there were."""
        with self._lock, self._conn:
            return self._conn.execute("DELETE FROM items WHERE namespace = ?", (namespace,)).rowcount

    # -- reads ----------------------------------------------------------------------------------

    def get(self, namespace: str, item_id: str) -> Item:
        with self._lock:
            return _item(self._row(namespace, item_id))

    def count(self, namespace: str) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM items WHERE namespace = ?", (namespace,)).fetchone()[0]

    def namespaces(self) -> list[tuple[str, int]]:
        """Every namespace with its item count: the operator's overview (the dashboard), never an agent's."""
        with self._lock:
            rows = self._conn.execute("SELECT namespace, count(*) FROM items GROUP BY namespace ORDER BY namespace").fetchall()
        return [(row[0], row[1]) for row in rows]

    def list(self, namespace: str, *, tag: str | None = None, limit: int | None = None,
             cursor: str | None = None) -> Page:
        """Newest first; the cursor is the last seq seen."""
        size = page_size(limit)
        before = decode_cursor(cursor, "list")
        sql = f"SELECT {_COLUMNS} FROM items WHERE items.namespace = ?"  # noqa: S608 - constant SQL fragments only; values are bound
        args: list[Any] = [namespace]
        if before is not None:
            sql += " AND items.seq < ?"
            args.append(before)
        if tag is not None:
            sql += _TAG_FILTER
            args.append(_one_tag(tag))
        sql += " ORDER BY items.seq DESC LIMIT ?"
        args.append(size + 1)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        more = len(rows) > size
        rows = rows[:size]
        return Page([_item(row) for row in rows], encode_cursor("list", rows[-1]["seq"]) if more else None)

    def search(self, namespace: str, q: str, *, tag: str | None = None, limit: int | None = None,
               cursor: str | None = None) -> Page:
        """Best BM25 match first, ranked within the namespace; the cursor is an offset into the ranking."""
        size = page_size(limit)
        offset = decode_cursor(cursor, "search") or 0
        words = query_words(q)
        # CROSS JOIN: the index first; SQLite would otherwise walk the whole namespace and probe it per row.
        sql = "SELECT items.seq FROM items_fts CROSS JOIN items ON items.seq = items_fts.rowid WHERE items_fts MATCH ? AND items.namespace = ?"
        args: list[Any] = [fts_query(words), namespace]
        if tag is not None:
            sql += _TAG_FILTER
            args.append(_one_tag(tag))
        with self._lock:
            matched = [row[0] for row in self._conn.execute(sql, args)]
            if not matched:
                return Page([], None)
            phrases = self._phrases(words)
            hits = [self._hits(namespace, phrase) for phrase in phrases]
            lengths = {
                row[0]: ranking.sizes_of(row[1])
                for row in self._conn.execute(
                    "SELECT d.id, d.sz FROM items JOIN items_fts_docsize d ON d.id = items.seq WHERE items.namespace = ?", (namespace,)
                )
            }
            scores = ranking.scores(matched, hits, lengths)
            ranked = sorted(matched, key=lambda seq: (scores[seq], -seq))[offset : offset + size + 1]
            more = len(ranked) > size
            ranked = ranked[:size]
            marks = ",".join("?" * len(ranked))
            rows = {row["seq"]: row for row in self._conn.execute(f"SELECT {_COLUMNS} FROM items WHERE items.seq IN ({marks})", ranked)}  # noqa: S608 - placeholders only
        return Page(
            [_item(rows[seq], scores[seq]) for seq in ranked if seq in rows],
            encode_cursor("search", offset + size) if more else None,
        )

    def _phrases(self, words: list[str]) -> list[list[str]]:
        """Each word's tokens, split by the index's own tokenizer (a word may be several, or none)."""
        self._words.execute("DELETE FROM words")
        self._words.executemany("INSERT INTO words (rowid, word) VALUES (?, ?)", enumerate(words))
        phrases: list[list[str]] = [[] for _ in words]
        for doc, term in self._words.execute("SELECT doc, term FROM words_vocab ORDER BY doc, offset"):
            phrases[doc].append(term)
        return phrases

    def _hits(self, namespace: str, tokens: list[str]) -> dict[int, float]:
        """The phrase's weighted hit count in each item of the namespace that holds it."""
        if len(tokens) != 1:  # a word the tokenizer splits (foo_bar): its tokens must follow one another
            return ranking.phrase_hits([self._instances(namespace, token) for token in tokens], _WEIGHTS)
        hits: dict[int, float] = {}
        rows = self._conn.execute(
            "SELECT v.doc, v.col, count(*) FROM temp.items_vocab v CROSS JOIN items ON items.seq = v.doc "
            "WHERE v.term = ? AND items.namespace = ? GROUP BY v.doc, v.col",
            (tokens[0], namespace),
        )
        for row, column, count in rows:
            hits[row] = hits.get(row, 0.0) + _WEIGHTS.get(column, 1.0) * count
        return hits

    def _instances(self, namespace: str, token: str) -> list[ranking.Instance]:
        rows = self._conn.execute(
            "SELECT v.doc, v.col, v.offset FROM temp.items_vocab v CROSS JOIN items ON items.seq = v.doc WHERE v.term = ? AND items.namespace = ?",
            (token, namespace),
        )
        return [ranking.Instance(row[0], row[1], row[2]) for row in rows]

    def _row(self, namespace: str, item_id: str) -> sqlite3.Row:
        sql = f"SELECT {_COLUMNS} FROM items WHERE items.id = ? AND items.namespace = ?"  # noqa: S608 - constant SQL fragments only; values are bound
        row = self._conn.execute(sql, (item_id, namespace)).fetchone()
        if row is None:
            raise ItemNotFoundError(item_id)
        return row


def _item(row: sqlite3.Row, score: float | None = None) -> Item:
    return Item(
        id=row["id"],
        text=row["text"],
        tags=tuple(json.loads(row["tags"])),
        metadata=json.loads(row["metadata"]) if row["metadata"] is not None else None,
        created=row["created"],
        updated=row["updated"],
        score=score,
    )


def _check_text(text: str, limits: Limits) -> None:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("text must be a non-empty string", "text")
    size = len(text.encode("utf-8"))
    if size > limits.max_item_bytes:
        raise LimitExceededError(
            f"text is {size} bytes, more than the limit of {limits.max_item_bytes} (memory.max_item_bytes)",
            code="memory_item_too_large",
            setting="memory.max_item_bytes",
        )


def _metadata_json(metadata: dict[str, Any] | None, limits: Limits) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidInputError("metadata must be a JSON object", "metadata")
    encoded = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)
    if len(encoded.encode("utf-8")) > limits.max_item_bytes:
        raise LimitExceededError(
            f"metadata is larger than the limit of {limits.max_item_bytes} bytes (memory.max_item_bytes)",
            code="memory_item_too_large",
            setting="memory.max_item_bytes",
        )
    return encoded


def _one_tag(tag: str) -> str:
    if not isinstance(tag, str) or not tag:
        raise InvalidInputError("tag must be a non-empty string", "tag")
    return tag
