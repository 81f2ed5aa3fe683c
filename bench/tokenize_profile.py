"""Where a large request's parse and tokenisation time goes: ``python -m bench.tokenize_profile``.

Parses ``--requests`` distinct chat bodies of ``--size`` characters as the gateway does
(:func:`gateway.parsing.parse` with the routing limit, ``max_prefix_blocks`` × ``block_size`` = 8,192 ids),
under pyinstrument, and prints CPU per request and the call tree. ``--tokenizer llama3`` builds a Llama-3-style
model directory (:mod:`flotilla.tokenizer_files`); the default is the synthetic tokenizer.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import orjson

from flotilla.tokenizer import load_tokenizer, synthetic_ids, synthetic_text
from gateway.parsing import parse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", choices=["synthetic", "llama3"], default="synthetic")
    p.add_argument("--size", type=int, default=1 << 20)
    p.add_argument("--requests", type=int, default=20)
    args = p.parse_args()
    from pyinstrument import Profiler

    with tempfile.TemporaryDirectory() as tmp:
        spec = None
        if args.tokenizer == "llama3":
            from flotilla.tokenizer_files import write_llama3

            spec = str(write_llama3(Path(tmp) / "llama3") / "tokenizer.json")
        tok = load_tokenizer(spec)
        content = synthetic_text(synthetic_ids(7, args.size // 5))[: args.size]
        bodies = [
            orjson.dumps({"model": "m", "messages": [{"role": "user", "content": f"{i} {content}"}]})
            for i in range(args.requests + 1)
        ]
        extra = (8192,)
        parse(bodies[0], "chat", tok, *extra)  # warm: first use compiles, allocates caches
        profiler = Profiler(interval=0.0005)
        cpu = time.process_time()
        profiler.start()
        for body in bodies[1:]:
            parse(body, "chat", tok, *extra)
        profiler.stop()
        per = (time.process_time() - cpu) / args.requests
    print(f"{args.tokenizer}, {args.size} characters: CPU {per * 1000:.1f} ms per request")
    print(profiler.output_text(unicode=True, color=False))


if __name__ == "__main__":
    main()
