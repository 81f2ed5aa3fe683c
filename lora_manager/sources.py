"""How an adapter's ``source`` URL reaches vLLM as ``lora_path`` (the table is in docs/lora.md).

vLLM's runtime API takes one string, ``lora_path``, and resolves it itself: an existing local directory is
read from disk; anything else is tried as a Hugging Face Hub repo id (downloaded with the engine's own
``HF_TOKEN``). So:

* ``file:///abs/dir`` → ``/abs/dir`` — a directory the *engine pod* sees (baked into the image or mounted);
* ``hf://org/repo`` → ``org/repo`` — a Hub repo id;
* ``s3://``, ``gs://``, ``https://`` → passed through unchanged: only engine images whose loader fetches URLs
  (a LoRA resolver plugin, a downloading sidecar) can load them; stock vLLM answers "No adapter found" and the
  adapter reports ``SourceRefused``.

What cannot work anywhere is refused at admission (CEL in the CRD; an https allow-list in the chart's
ValidatingAdmissionPolicy), so this module only translates.
"""

from __future__ import annotations


def engine_path(source: str) -> str:
    """``lora_path`` for vLLM's ``/v1/load_lora_adapter`` from a LoRAAdapter ``source``."""
    if source.startswith("file://"):
        return source.removeprefix("file://")
    if source.startswith("hf://"):
        return source.removeprefix("hf://")
    return source
