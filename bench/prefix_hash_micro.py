"""How the gateway's approximate prefix blocks are hashed, chosen by measurement: ``python -m bench.prefix_hash_micro``.

Two tables, each measured in shuffled rounds side by side (medians over rounds, with the range):

1. *chained 64-bit hashes of the 64-character blocks* of a 2k-token prompt (~155 blocks) — the candidates for
   :func:`gateway.chars.char_block_hashes`: xxh3 with the parent as its seed (chosen), xxh3 over parent bytes ‖
   block, keyed blake2b (8-byte digest), and a pair of zlib.crc32 chained through each other;
2. *the per-request parse path* on the overhead benchmark's ~10 KB chat bodies: ``prefix_hash="tokens"`` (orjson,
   the synthetic tokenizer's bounded encode, token-block hashes) against ``"chars"`` (orjson, canonical text,
   character-block hashes), as :class:`gateway.prompts.Prompts` runs them on the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import statistics
import time
import zlib
from collections.abc import Callable, Mapping

import xxhash

from bench.gateway_overhead import Bodies
from flotilla.tokenizer import synthetic_ids, synthetic_text
from gateway.chars import char_block_hashes
from gateway.prompts import Prompts
from gateway.settings import GatewaySettings

BLOCK = 64
_X = xxhash.xxh3_64_intdigest


def xxh3_concat(text: str) -> list[int]:
    data, parent, out = text.encode(), _X(b"m"), []
    for start in range(0, len(data) // BLOCK * BLOCK, BLOCK):
        parent = _X(parent.to_bytes(8, "little") + data[start : start + BLOCK])
        out.append(parent)
    return out


def blake2b_keyed(text: str) -> list[int]:
    data, parent, out = text.encode(), b"m", []
    for start in range(0, len(data) // BLOCK * BLOCK, BLOCK):
        parent = hashlib.blake2b(data[start : start + BLOCK], digest_size=8, key=parent).digest()
        out.append(int.from_bytes(parent, "little"))
    return out


def crc32_pair(text: str) -> list[int]:
    data, a, b, out = text.encode(), zlib.crc32(b"m"), zlib.adler32(b"m"), []
    for start in range(0, len(data) // BLOCK * BLOCK, BLOCK):
        block = data[start : start + BLOCK]
        a, b = zlib.crc32(block, a), zlib.crc32(block, b ^ 0x9E3779B9)
        out.append(a << 32 | b)
    return out


def measure(fns: Mapping[str, Callable[[], object]], rounds: int, number: int) -> dict[str, list[float]]:
    """µs per call of each function: ``rounds`` rounds in a shuffled order, ``number`` calls each."""
    out: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for _ in range(rounds):
        random.shuffle(names)
        for name in names:
            fn = fns[name]
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            out[name].append((time.perf_counter() - t0) / number * 1e6)
    return out


def report(title: str, results: dict[str, list[float]]) -> None:
    print(f"\n{title}\n{'':30s} {'median µs':>10s} {'range':>18s}")
    for name, values in results.items():
        print(f"{name:30s} {statistics.median(values):10.1f}   [{min(values):6.1f}, {max(values):6.1f}]")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--number", type=int, default=400)
    args = p.parse_args()
    text = synthetic_text(synthetic_ids(1, 2000))
    print(f"prompt: {len(text)} characters, {len(text) // BLOCK} blocks of {BLOCK}")
    hashes = {
        "xxh3, parent as seed (chosen)": lambda: char_block_hashes(text, block_chars=BLOCK, scope="m"),
        "xxh3, parent ‖ block": lambda: xxh3_concat(text),
        "blake2b-64, parent as key": lambda: blake2b_keyed(text),
        "zlib.crc32 pair": lambda: crc32_pair(text),
    }
    report("chained block hashes of one 2k-token prompt", measure(hashes, args.rounds, args.number))

    bodies = Bodies()
    raws = [bodies.next(False) for _ in range(args.number)]
    tokens = Prompts(GatewaySettings(prefix_hash="tokens"))
    chars = Prompts(GatewaySettings(prefix_hash="chars"))
    loop = asyncio.new_event_loop()

    def on_tokens() -> None:
        parsed = loop.run_until_complete(tokens.parse(next(it_tokens), "chat"))
        tokens.block_hashes(parsed)

    def on_chars() -> None:
        parsed = loop.run_until_complete(chars.parse(next(it_chars), "chat"))
        assert parsed.hashes

    it_tokens = iter(raws * (args.rounds + 1))
    it_chars = iter(raws * (args.rounds + 1))
    parses = {'prefix_hash="tokens"': on_tokens, 'prefix_hash="chars"': on_chars}
    report("parse + block hashes of a ~2k-token chat body", measure(parses, args.rounds, args.number))
    loop.close()
    tokens.close()
    chars.close()


if __name__ == "__main__":
    main()
