"""The memory store on its own: CRUD, FTS5 ranking, tags, cursors, limits, isolation."""

from __future__ import annotations

import sqlite3

import pytest
from hal0.memory import InvalidInputError, ItemNotFoundError, LimitExceededError, Limits, MemoryStore
from hal0.memory.store import MIGRATIONS
from hal0.store import migrate

LIMITS = Limits(max_items=100, max_item_bytes=256)


@pytest.fixture
def store(tmp_path):
    store = MemoryStore(tmp_path / "m.db")
    yield store
    store.close()


def test_wal_mode_and_schema_version(store, tmp_path):
    conn = sqlite3.connect(tmp_path / "m.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == MIGRATIONS[-1].version


def test_migrations_are_idempotent_and_refuse_newer(tmp_path):
    MemoryStore(tmp_path / "m.db").close()
    conn = sqlite3.connect(tmp_path / "m.db")
    assert migrate(conn, MIGRATIONS) == MIGRATIONS[-1].version
    conn.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="newer"):
        migrate(conn, MIGRATIONS)


def test_add_get_update_delete(store):
    item = store.add("a", "Ann likes green tea", LIMITS, tags=["people", "people", "tea"], metadata={"k": 1})
    assert item.tags == ("people", "tea")
    assert store.get("a", item.id) == item
    updated = store.update("a", item.id, LIMITS, text="Ann likes black tea", tags=["tea"])
    assert (updated.text, updated.tags, updated.metadata) == ("Ann likes black tea", ("tea",), {"k": 1})
    assert updated.updated >= item.updated
    assert [hit.id for hit in store.search("a", "black").items] == [item.id]
    assert store.search("a", "green").items == []
    store.delete("a", item.id)
    with pytest.raises(ItemNotFoundError):
        store.get("a", item.id)


def test_search_ranks_by_bm25_and_filters_by_tag(store):
    store.add("a", "the weather today is rainy", LIMITS)
    best = store.add("a", "rainy rainy rainy weekend", LIMITS, tags=["plans"])
    store.add("a", "nothing to see", LIMITS)
    page = store.search("a", "rainy")
    assert page.items[0].id == best.id and len(page.items) == 2
    assert page.items[0].to_json()["score"] >= page.items[1].to_json()["score"]
    assert [hit.id for hit in store.search("a", "rainy", tag="plans").items] == [best.id]


def test_search_text_is_never_fts_syntax(store):
    store.add("a", 'quotes " and NEAR( and col: survive', LIMITS)
    for query in ["NEAR(", "text:quotes", "a OR", 'quotes")', "col: AND"]:
        store.search("a", query)  # would be an FTS5 syntax error if passed through
    for query in ['"', "*", '"*', "   "]:
        with pytest.raises(InvalidInputError, match="no searchable words"):
            store.search("a", query)


def test_list_pagination_newest_first(store):
    ids = [store.add("a", f"item {n}", LIMITS).id for n in range(7)]
    seen, cursor = [], None
    while True:
        page = store.list("a", limit=3, cursor=cursor)
        seen += [item.id for item in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids[::-1]


def test_search_pagination_covers_all_hits(store):
    for n in range(5):
        store.add("a", f"apple number {n}", LIMITS)
    first = store.search("a", "apple", limit=2)
    second = store.search("a", "apple", limit=2, cursor=first.next_cursor)
    third = store.search("a", "apple", limit=2, cursor=second.next_cursor)
    ids = [item.id for page in (first, second, third) for item in page.items]
    assert len(set(ids)) == 5 and third.next_cursor is None


@pytest.mark.parametrize("cursor", ["junk", "eyJrIjoibGlzdCIsInYiOi0xfQ"])
def test_bad_cursor_is_invalid_input(store, cursor):
    with pytest.raises(InvalidInputError, match="cursor"):
        store.list("a", cursor=cursor)


def test_list_cursor_cannot_page_a_search(store):
    store.add("a", "x one", LIMITS)
    store.add("a", "x two", LIMITS)
    cursor = store.list("a", limit=1).next_cursor
    with pytest.raises(InvalidInputError):
        store.search("a", "x", cursor=cursor)


def test_limits(store):
    with pytest.raises(LimitExceededError) as big:
        store.add("a", "x" * 257, LIMITS)
    assert big.value.code == "memory_item_too_large"
    small = Limits(max_items=2, max_item_bytes=256)
    store.add("a", "one", small)
    store.add("a", "two", small)
    with pytest.raises(LimitExceededError) as full:
        store.add("a", "three", small)
    assert full.value.code == "memory_full"
    store.add("b", "other namespaces have their own count", small)


@pytest.mark.parametrize(("text", "tags"), [("", None), ("   ", None), ("ok", ["has space"]), ("ok", ["x" * 65])])
def test_invalid_input(store, text, tags):
    with pytest.raises(InvalidInputError):
        store.add("a", text, LIMITS, tags=tags)


def test_namespaces_are_isolated(store):
    mine = store.add("a", "secret plan", LIMITS, tags=["t"])
    store.add("b", "secret plan too", LIMITS, tags=["t"])
    with pytest.raises(ItemNotFoundError):
        store.get("b", mine.id)
    with pytest.raises(ItemNotFoundError):
        store.delete("b", mine.id)
    with pytest.raises(ItemNotFoundError):
        store.update("b", mine.id, LIMITS, text="hijacked")
    assert [item.id for item in store.search("a", "secret").items] == [mine.id]
    assert [item.id for item in store.list("a", tag="t").items] == [mine.id]
    assert store.forget_all("b") == 1
    assert store.get("a", mine.id).text == "secret plan"


def _scores(store, namespace, query):
    return {item.text: item.score for item in store.search(namespace, query, limit=100).items}


def test_another_namespace_never_moves_the_callers_scores(store):
    # Issue 29: FTS5's bm25() took its statistics from the index all agents share, so alice storing
    # "zebra" items dropped bob's own "zebra" item to the IDF floor.
    store.add("bob", "zebra crossing near the school", LIMITS)
    store.add("bob", "giraffe at the zoo", LIMITS, tags=["zoo"])
    for text in ("the school bus timetable", "lunch menu for monday", "notes on the garden", "a list of books"):
        store.add("bob", text, LIMITS)
    before = {query: _scores(store, "bob", query) for query in ("zebra", "giraffe", "zebra giraffe school")}
    for n in range(5):
        store.add("alice", f"zebra zebra stripes {n} and a long text that changes the average length of a row", LIMITS, tags=["zebra"])
    store.add("alice", "giraffe", LIMITS)
    after = {query: _scores(store, "bob", query) for query in ("zebra", "giraffe", "zebra giraffe school")}
    assert after == before
    assert all(score < -1e-3 for scores in before.values() for score in scores.values())  # real scores, not the IDF floor


def test_within_one_namespace_the_scores_are_fts5s_bm25(store):
    texts = [
        ("rainy rainy weekend in the hills", ["plans", "rainy"]),
        ("the weather today is rainy", []),
        ("Café au lait, naïve résumé", ["cafe"]),
        ("foo_bar baz foo bar foo_bar", []),
        ("nothing to see here at all, a much longer row than the others are", []),
        ("weekend weather", ["weather"]),
    ]
    for text, tags in texts:
        store.add("only", text, LIMITS, tags=tags)
    for query in ("rainy", "rainy weekend", "cafe naive", "café", "foo_bar", "weather plans", "RAINY hills see"):
        ours = _scores(store, "only", query)
        words = " OR ".join(f'"{word}"' for word in query.lower().replace(",", " ").split())
        theirs = dict(store._conn.execute(
            "SELECT items.text, bm25(items_fts, 2.0, 1.0) FROM items_fts JOIN items ON items.seq = items_fts.rowid WHERE items_fts MATCH ?",
            (words,)).fetchall())
        assert ours.keys() == theirs.keys(), query
        for text, score in ours.items():
            assert score == pytest.approx(theirs[text], rel=1e-12), (query, text)
