"""Decoding speed: GPT generation with the KV cache against recomputing the whole context each token.

ember's ``gpt`` (4 layers, 4 heads, 256 wide) with a 512-token context, so 256 new tokens after a
32-token prompt fit without cropping and both variants produce the very same (greedy) tokens, which
is checked. ``cached`` feeds one token per step through the model's KV cache; ``recompute`` runs
the whole sequence so far every step (what a model without a cache does). Variants take turns,
the order rotated each round; the speed-up is the median of per-round ratios.

Usage:
    python benchmarks/generate.py                    # 2 threads, batch 1, fp32, 5 rounds
    python benchmarks/generate.py --batch 8 --precision bf16
"""

from __future__ import annotations

import argparse
import time

import _common
import torch

import ember
from ember.decoding import generate
from ember.train.precision import resolve_precision

PROMPT, NEW, CONTEXT = 32, 256, 512


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args(argv)
    _common.set_threads(args.threads)
    print(_common.machine())
    torch.manual_seed(0)
    model = ember.models.create("gpt", vocab_size=65, block_size=CONTEXT).eval()
    prompt = torch.randint(0, 65, (args.batch, PROMPT))
    precision = resolve_precision(args.precision, torch.device("cpu"))

    def run(use_cache: bool) -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        with precision.autocast():
            out = generate(model, prompt, max_new_tokens=NEW, greedy=True, use_cache=use_cache)
        return time.perf_counter() - start, out

    run(True), run(False)  # warm-up
    seconds: dict[str, list[float]] = {"cached": [], "recompute": []}
    outputs = {}
    for r in range(args.rounds):
        for name in _common.rotate(list(seconds), r):
            t, outputs[name] = run(name == "cached")
            seconds[name].append(t)
    same = torch.equal(outputs["cached"], outputs["recompute"])
    ratios = [full / cached for full, cached in zip(seconds["recompute"], seconds["cached"])]
    rows = [
        [name, f"{args.batch * NEW / _common.median(ts):,.0f}", f"{_common.median(ts) * 1e3 / NEW:.2f}"]
        for name, ts in seconds.items()
    ]
    print()
    print(
        f"GPT 4x4x256, prompt {PROMPT} + {NEW} new tokens (context {CONTEXT}), batch {args.batch}, "
        f"{args.precision}, {args.threads} threads, {args.rounds} rounds; identical tokens: {same}"
    )
    print(_common.table(["variant", "tokens/s", "ms/token"], rows))
    print(f"KV cache speed-up: {_common.median(ratios):.1f}x (range {_common.spread(ratios)})")


if __name__ == "__main__":
    main()
