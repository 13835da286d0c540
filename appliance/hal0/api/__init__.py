"""Layer 4: HTTP routes (OpenAI-compatible API, health, metrics)."""
