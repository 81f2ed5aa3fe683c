"""The default hourly price list: on-demand, per GPU, AWS us-east-1 list prices (instance price ÷ GPUs).

One provider keeps the ratios consistent (what the optimizer trades on); override with ``--prices`` for your
own contract. Sources (docs/optimizer.md has the table with dates):

* L4        — g6.xlarge (1 × L4)            $0.8048/h
* A10G      — g5.xlarge (1 × A10G)          $1.006/h
* L40S      — g6e.xlarge (1 × L40S)         $1.861/h (also quoted by Modal's "NVIDIA L40S price", Aug 2025)
* A100-40GB — p4d.24xlarge (8 × A100 40GB)  $32.7726/h → $4.0966
* A100-80GB — p4de.24xlarge (8 × A100 80GB) $40.9657/h → $5.1207
* H100      — p5.48xlarge (8 × H100 80GB)   $98.32/h   → $12.29 (list price before AWS's June 2025 cut of up
  to 45 % on P5; with the cut the H100 becomes competitive more often — rerun with ``--prices``)

The names are the GPU names of :mod:`engine_sim.gpus`' presets and of ``flotilla profile --gpu``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

DEFAULT_PRICES: Final = MappingProxyType({
    "l4": 0.8048,
    "a10g": 1.006,
    "l40s": 1.861,
    "a100-40gb": 32.7726 / 8,
    "a100-80gb": 40.9657 / 8,
    "h100-80gb": 98.32 / 8,
})  # fmt: skip
