"""engine_sim: a vLLM-compatible engine simulator."""
