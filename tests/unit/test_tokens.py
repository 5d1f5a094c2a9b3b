from __future__ import annotations

import gzip
import hashlib
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenledger.tokens import StreamingTokenCounter, count_chat_tokens, encoding_name_for_model, get_encoding
from tokenledger.tokens.encodings import SPECS, EncodingDataError, EncodingSpec, load_bpe_ranks

# The example conversation of OpenAI's cookbook "How to count tokens with tiktoken".
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_packaged_bpe_matches_openai_published_sha256(name: str) -> None:
    spec = SPECS[name]
    data = gzip.decompress(resources.files(spec.package).joinpath(spec.resource).read_bytes())
    assert hashlib.sha256(data).hexdigest() == spec.sha256


def test_hash_mismatch_is_refused() -> None:
    bad = EncodingSpec("x", "bpe_openai.data", "cl100k_base.tiktoken.gz", "0" * 64, "", {})
    with pytest.raises(EncodingDataError, match="sha256"):
        load_bpe_ranks(bad)


def test_encodings_known_ids() -> None:
    assert get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert get_encoding("o200k_base").encode("hello world") == [24912, 2375]
    assert get_encoding("cl100k_base").n_vocab == 100277
    assert get_encoding("o200k_base").n_vocab == 200019
    assert len(get_encoding("cl100k_base").encode("tiktoken is great!")) == 6


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-3.5-turbo-0301", 127),
        ("gpt-3.5-turbo-0613", 129),
        ("gpt-4-0613", 129),
        ("gpt-4", 129),
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
    ],
)
def test_cookbook_chat_counts(model: str, expected: int) -> None:
    assert count_chat_tokens(COOKBOOK_MESSAGES, model) == expected


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("openai/gpt-4.1-mini", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-16k", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("claude-sonnet-4", None),
        ("text-davinci-003", None),
    ],
)
def test_model_to_encoding(model: str, encoding: str | None) -> None:
    assert encoding_name_for_model(model) == encoding


ENGLISH = st.sampled_from(
    [
        "The",
        " quick",
        " brown",
        " fox",
        "'s",
        " don't",
        " I'll",
        "  ",
        "\n",
        "\n\n",
        "   ",
        ".",
        ",",
        "!",
        "?",
        " jumps",
        " over",
        "\t",
        "123",
        "4567",
        " 2026",
        "...",
        "\r\n",
        "'re",
        "'VE",
        "ABC",
        "Ünïcödé",
    ]
)
CHINESE = st.sampled_from(["中文", "的", "计费", "，", "。", "模型", " ", "\n", "令牌", "2026年", "Token", "（", "）"])
CODE = st.sampled_from(
    [
        "def ",
        "f(x):",
        "\n    ",
        "return ",
        "x + 1",
        "{",
        "}",
        "[]",
        "//",
        "/*",
        "*/",
        "==",
        "!=",
        " ",
        "\t",
        "'a'",
        '"b"',
        "0x1F",
        "\n\n",
        "    ",
        "foo_bar",
        "=>",
        ";",
        "::",
        "</div>",
        "&&",
        "# comment",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(ENGLISH | CHINESE | CODE, max_size=60),
    cuts=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=40),
    name=st.sampled_from(["cl100k_base", "o200k_base"]),
)
def test_streaming_total_equals_whole_text(parts: list[str], cuts: list[int], name: str) -> None:
    text = "".join(parts)
    enc = get_encoding(name)
    counter = StreamingTokenCounter(enc)
    i = k = 0
    while i < len(text):
        step = cuts[k % len(cuts)]
        counter.feed(text[i : i + step])
        i += step
        k += 1
        # The running count is exact for the text so far, not only at the end.
        assert counter.count == len(enc.encode_ordinary(text[:i]))
    assert counter.count == len(enc.encode_ordinary(text))
    assert counter.committed <= counter.count


def test_one_piece_window_is_not_enough() -> None:
    """Why pieces stay open: o200k merges ``don`` + ``'t`` into one piece once ``t`` arrives."""
    enc = get_encoding("o200k_base")
    chunks = ["I don", "'", "t know"]
    narrow = StreamingTokenCounter(enc, keep_pieces=1)
    safe = StreamingTokenCounter(enc)
    for chunk in chunks:
        narrow.feed(chunk)
        safe.feed(chunk)
    assert safe.count == len(enc.encode_ordinary("I don't know")) == 3
    assert narrow.count == 4


def test_streaming_long_text_exact() -> None:
    enc = get_encoding("o200k_base")
    text = ("Billing pipelines must never lose a token. 计费 2026-11-22\n\tdef f(x): return x*2\n") * 400
    counter = StreamingTokenCounter(enc)
    for i in range(0, len(text), 7):
        counter.feed(text[i : i + 7])
    assert counter.count == len(enc.encode_ordinary(text)) == 11200
