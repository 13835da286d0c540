"""The config digest in /health: equal on every box of a fleet with the same policy, whatever each binds."""

from __future__ import annotations

from hal0.config import load_text

BASE = """
server: {bind: %s, port: 8080}
models: [{id: tiny, path: /var/lib/hal0/models/tiny.gguf, default: true}]
agents: {personas: [{id: helper, system_prompt: "%s"}]}
"""


def test_digest_ignores_the_bind_address_but_not_policy() -> None:
    box1 = load_text(BASE % ("10.0.0.1", "Be brief."), "a.yaml", environ={}).digest
    box2 = load_text(BASE % ("10.0.0.2", "Be brief."), "b.yaml", environ={}).digest
    edited = load_text(BASE % ("10.0.0.1", "Be verbose."), "c.yaml", environ={}).digest
    assert box1 == box2
    assert edited != box1
    assert len(box1) == 12
