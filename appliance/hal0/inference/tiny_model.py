"""Write a tiny, real GGUF model for tests and the lab.

It is a llama-architecture model with random weights and a byte-fallback SentencePiece vocabulary:
llama.cpp loads it, tokenizes any text, and generates (nonsense) tokens at high speed. A few hundred
KB, made in milliseconds, identical for a given seed, so CI and the lab never download weights.

With `sliding_window` it is a Gemma 3 architecture model instead, whose layers attend only to that
many positions (as Gemma 3's local layers do): llama.cpp then keeps only a window of their KV, which
is what the prompt cache must check before it reuses a prefix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# A chatml template, so chat completions work without naming a chat format.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_TOKEN_NORMAL, _TOKEN_UNKNOWN, _TOKEN_CONTROL, _TOKEN_BYTE = 1, 2, 3, 6


def _vocabulary() -> tuple[list[bytes], list[float], list[int]]:
    tokens: list[bytes] = [b"<unk>", b"<s>", b"</s>", b"<|im_start|>", b"<|im_end|>"]
    types = [_TOKEN_UNKNOWN, _TOKEN_CONTROL, _TOKEN_CONTROL, _TOKEN_CONTROL, _TOKEN_CONTROL]
    tokens += [f"<0x{byte:02X}>".encode() for byte in range(256)]
    types += [_TOKEN_BYTE] * 256
    # Some whole-word pieces, so that tokenization is not only bytes.
    words = ["\u2581", "\u2581the", "\u2581a", "\u2581hal", "0", "\u2581model", "\u2581hello", "\u2581world", "e", "t", "o", "n"]
    tokens += [word.encode() for word in words]
    types += [_TOKEN_NORMAL] * len(words)
    scores = [0.0] * 261 + [-float(index) for index in range(len(words))]
    return tokens, scores, types


def write_test_model(
    path: str | Path,
    *,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_ff: int = 128,
    n_ctx: int = 2048,
    seed: int = 0,
    sliding_window: int | None = None,
) -> Path:
    """Write the model to `path` and return it."""
    import gguf  # imported here: only this command needs it

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = _vocabulary()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.08).astype(np.float32)

    gemma = sliding_window is not None
    writer = gguf.GGUFWriter(str(target), "gemma3" if gemma else "llama")
    writer.add_name("hal0-test-model")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    if gemma:
        writer.add_key_length(n_embd // n_head)
        writer.add_value_length(n_embd // n_head)
        writer.add_sliding_window(sliding_window)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(4)  # <|im_end|> ends a chat turn, like chatml models
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHAT_TEMPLATE)

    # numpy shapes are the reverse of GGUF's (ne0 first): token_embd is ne [n_embd, n_vocab].
    writer.add_tensor("token_embd.weight", weights(n_vocab, n_embd))
    for layer in range(n_layer):
        prefix = f"blk.{layer}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{prefix}.{name}.weight", weights(n_embd, n_embd))
        if gemma:
            for name in ("attn_q_norm", "attn_k_norm"):
                writer.add_tensor(f"{prefix}.{name}.weight", np.ones(n_embd // n_head, dtype=np.float32))
            for name in ("post_attention_norm", "post_ffw_norm"):
                writer.add_tensor(f"{prefix}.{name}.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{prefix}.ffn_gate.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"{prefix}.ffn_up.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"{prefix}.ffn_down.weight", weights(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", weights(n_vocab, n_embd))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target
