"""Flotilla's shared core: the contracts every component agrees on.

CRD models, the pod label contract, the tokenizer and chat template that make engine and gateway token ids
identical, and the parsing of vLLM's metrics. Nothing here imports a component, except ``flotilla.cli``,
which wires components into one command line.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
