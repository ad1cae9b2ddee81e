"""What a query may be: checks shared by the CLI, the Python API and the HTTP service (a 4xx there)."""
from __future__ import annotations

from snappy.regions.blocks import REGION_LEVELS
from snappy.encoders.lexical import text_pieces
from snappy.errors import NO_WORDS, QueryError
from snappy.regions.propagation import DEFAULT_METHOD, DEFAULT_THRESHOLD, METHODS, Threshold

MAX_QUERY_CHARS = 2000  # longer text is a document, not a query (and costs the encoder seconds)
MAX_TOP_PAGES = 100
DEFAULT_TOP_PAGES = 5

def check_query(text: object, max_chars: int = MAX_QUERY_CHARS) -> str:
    """The query stripped of surrounding whitespace, or QueryError saying why it cannot be searched."""
    if not isinstance(text, str):
        raise QueryError(f"query must be a string, not {type(text).__name__}")
    q = text.strip()
    if not q:
        raise QueryError("query is empty")
    if len(q) > max_chars:
        raise QueryError(f"query is {len(q)} characters, over the limit of {max_chars}")
    if not text_pieces(q):  # the lexical encoder's normalisation, the one page text gets
        raise QueryError(NO_WORDS)
    return q


def check_request(top_pages: object = DEFAULT_TOP_PAGES, threshold: object = DEFAULT_THRESHOLD, method: object = DEFAULT_METHOD,
                  max_top_pages: int = MAX_TOP_PAGES) -> tuple[int, Threshold, str]:
    """Validated ``(top_pages, threshold, method)`` of a query request."""
    if isinstance(top_pages, bool) or not isinstance(top_pages, int) or not 1 <= top_pages <= max_top_pages:
        raise QueryError(f"top_pages must be an integer from 1 to {max_top_pages}, got {top_pages!r}", "top_pages")
    try:
        thr = Threshold.parse(threshold)  # type: ignore[arg-type]
    except (ValueError, TypeError) as e:
        raise QueryError(str(e), "threshold") from e
    if method not in METHODS:
        raise QueryError(f"method must be one of {', '.join(METHODS)}, got {method!r}", "method")
    return top_pages, thr, str(method)


def check_level(level: object) -> str:
    """A valid region level (``line``, ``block``, ``auto``), or QueryError (field ``level``)."""
    if level not in REGION_LEVELS:
        raise QueryError(f"level must be one of {', '.join(REGION_LEVELS)}, got {level!r}", "level")
    return str(level)


def check_target(target: object) -> float | None:
    """A valid recall@10 target for the candidate stage (``0 < t <= 1``) or None, else QueryError
    (field ``target_recall``)."""
    if target is None:
        return None
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise QueryError(f"target_recall must be a number above 0 and at most 1, got {target!r}", "target_recall")
    return float(target)
