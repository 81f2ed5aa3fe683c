"""gateway: the OpenAI-compatible, prefix- and load-aware router."""
