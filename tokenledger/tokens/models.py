"""Which encoding a model uses, without touching the network."""

from __future__ import annotations

from tiktoken.model import MODEL_PREFIX_TO_ENCODING, MODEL_TO_ENCODING

from tokenledger.tokens.encodings import SPECS

APPROXIMATION_ENCODING = "o200k_base"
"""Used to *estimate* models with no public exact tokenizer (Claude, Gemini, Qwen, ...)."""


def encoding_name_for_model(model: str) -> str | None:
    """Exact encoding name of an OpenAI model, or ``None`` when none is known offline.

    Provider prefixes such as ``openai/`` or ``azure/`` are ignored. Only encodings we ship
    (cl100k_base, o200k_base) are returned; older ones (p50k, r50k) yield ``None``.

    Args:
        model: Model name as sent to the API, e.g. ``gpt-4o-2024-08-06``.
    """
    name = model.rsplit("/", 1)[-1].lower()
    found = MODEL_TO_ENCODING.get(name)
    if found is None:
        for prefix, enc in MODEL_PREFIX_TO_ENCODING.items():
            if name.startswith(prefix):
                found = enc
                break
    return found if found in SPECS else None


def estimation_encoding_for_model(model: str) -> tuple[str, bool]:
    """Encoding to count with and whether the count is exact for this model.

    Returns:
        ``(encoding_name, exact)``; ``exact`` is False for approximations.
    """
    exact = encoding_name_for_model(model)
    if exact is not None:
        return exact, True
    return APPROXIMATION_ENCODING, False
