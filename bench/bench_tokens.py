"""Token counting: streaming counter vs naive re-encoding, offline encoding vs plain tiktoken.

Prints ratios measured in one run on this machine. Not a timed test.
"""

from __future__ import annotations

import time
from pathlib import Path

import tiktoken

from tokenledger.tokens import StreamingTokenCounter, get_encoding


def corpus() -> str:
    """About 8k tokens of mixed prose, code and CJK text."""
    block = (
        "The ledger prices every call and attributes the cost to users, departments and projects.\n"
        "def allocate(total: int, weights: list[int]) -> list[int]:\n"
        "    return largest_remainder(total, weights)\n"
        "计费系统必须精确到纳美元，绝不重复计数。\n"
    )
    return block * 120


def main() -> None:
    """Run and print."""
    enc = get_encoding("o200k_base")
    text = corpus()
    n_tokens = len(enc.encode_ordinary(text))
    chunks = 2000
    step = max(1, len(text) // chunks)

    t0 = time.perf_counter()
    counter = StreamingTokenCounter(enc)
    for i in range(0, len(text), step):
        counter.feed(text[i : i + step])
    streaming = time.perf_counter() - t0
    assert counter.count == n_tokens

    t0 = time.perf_counter()
    seen = ""
    for i in range(0, len(text), step):
        seen += text[i : i + step]
        naive_count = len(enc.encode_ordinary(seen))
    naive = time.perf_counter() - t0
    assert naive_count == n_tokens

    big = text * 20
    plain = tiktoken.Encoding(
        name="plain", pat_str=enc._pat_str, mergeable_ranks=enc._mergeable_ranks, special_tokens={}
    )
    t0 = time.perf_counter()
    ours = len(enc.encode_ordinary(big))
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = len(plain.encode_ordinary(big))
    theirs_s = time.perf_counter() - t0
    assert ours == theirs

    print(f"text: {n_tokens} tokens streamed in {len(range(0, len(text), step))} chunks")
    print(f"streaming counter: {streaming * 1000:.1f} ms; naive re-encode: {naive * 1000:.1f} ms")
    print(f"ratio naive/streaming: {naive / streaming:.1f}x")
    print(
        f"offline encoding: {ours / ours_s / 1e6:.2f} M tokens/s; plain tiktoken: "
        f"{theirs / theirs_s / 1e6:.2f} M tokens/s; ratio {theirs_s / ours_s:.2f}"
    )
    print(f"(source: {Path(__file__).name})")


if __name__ == "__main__":
    main()
