"""Bad input at the library level (no Ray): a generated corpus of 100+ broken, odd and hostile
entries, local and on S3, goes through listing -> open_document -> iter_pages. Every entry ends
the way the corpus says (renders, or fails with its reason as a DOCUMENT failure), nothing hangs,
and every reason is stable (identical on a second pass) and free of addresses and temp paths.
"""
from __future__ import annotations

import os
import re
import tempfile
import time

import pytest
from conftest import deadline

from snappy.documents.failures import FailureKind, classify
from snappy.documents.pages import RenderOptions, iter_pages
from snappy.documents.sources import Source
from snappy.testing.synth import INDEXED, SKIPPED, bad_s3_objects, write_bad_corpus, write_good_corpus

DPI = 50.0
PER_ENTRY_S = 20.0
ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}|object at ")  # "13000x13000" is fine


def outcome(src: Source, entry, render: dict) -> tuple[str, object, FailureKind | None]:
    """("indexed", page count, None) or ("failed", reason, kind) for one listed entry."""
    if entry.problem is not None:
        return "failed", entry.problem, FailureKind.DOCUMENT  # rejected at listing: the entry's own fault
    opts = RenderOptions(**{"dpi": DPI, **render})
    try:
        with deadline(PER_ENTRY_S, entry.uri):
            with src.open_document(entry.uri, entry.raw_path) as doc:
                n = sum(1 for _ in iter_pages(doc.content, opts, source=doc.uri))
        return "indexed", n, None
    except Exception as e:
        f = classify(e, entry.uri)
        return "failed", f.reason, f.kind


def run_all(src: Source, expected: dict, key) -> dict:
    results = {}
    with deadline(120, "the whole pass"):
        for entry in src.iter_entries():
            k = key(entry)
            assert k in expected, f"unexpected entry listed: {entry.uri}"
            assert k not in results, f"listed twice: {entry.uri}"
            assert expected[k].expect != SKIPPED, f"should not be listed: {entry.uri}"
            results[k] = outcome(src, entry, expected[k].render)
    return results


def check(results: dict, expected: dict, forbidden: list[str]) -> None:
    wrong = []
    for k, (status, detail, kind) in results.items():
        exp = expected[k].expect
        if exp == INDEXED:
            pages = getattr(expected[k], "pages", None)
            if status != "indexed" or (pages is not None and detail != pages):
                wrong.append((k, exp, status, detail))
            continue
        if status != "failed" or exp not in detail or kind is not FailureKind.DOCUMENT:
            wrong.append((k, exp, status, detail, kind))
        reason = str(detail)
        assert "\n" not in reason and len(reason) <= 500, (k, reason)
        assert not ADDRESS.search(reason), (k, reason)
        for f in forbidden:
            assert f not in reason, (k, reason, f)
    assert not wrong, "\n".join(map(repr, wrong))
    missing = [k for k, e in expected.items() if e.expect != SKIPPED and k not in results]
    assert not missing, missing


# ---------------------------------------------------------------------- local
@pytest.fixture(scope="session")
def local_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-corpus")
    t0 = time.monotonic()
    entries = write_bad_corpus(root) + write_good_corpus(root)
    return root, entries, time.monotonic() - t0


def test_corpus_is_big_and_varied(local_corpus):
    root, entries, gen_s = local_corpus
    bad = [e for e in entries if e.expect not in (INDEXED, SKIPPED)]
    good = [e for e in entries if e.kind == "good"]
    assert len(bad) >= 100 and len(good) == 20
    assert len({e.kind for e in bad}) >= 25
    assert len({e.raw_name for e in entries}) == len(entries)
    assert len({e.query for e in good}) == 20 and all(e.query in e.fact for e in good)
    assert any(isinstance(e.name, bytes) and e.expect == INDEXED for e in entries)  # non-UTF-8 name, valid PDF
    assert gen_s < 10


def test_local_bad_corpus(local_corpus):
    root, entries, _ = local_corpus
    expected = {e.raw_name: e for e in entries}
    src = Source(root)
    root_raw = os.fsencode(src.root)  # resolved, as the listing reports it

    def key(entry):
        raw = entry.raw_path if entry.raw_path is not None else entry.uri.encode("utf-8")
        assert raw.startswith(root_raw + b"/")
        return raw[len(root_raw) + 1:]

    t0 = time.monotonic()
    first = run_all(src, expected, key)
    elapsed = time.monotonic() - t0
    check(first, expected, [tempfile.gettempdir() + "/", str(root)])
    # stable: a second pass (a fresh Source, as in the next nightly run) gives identical outcomes
    assert run_all(Source(root), expected, key) == first
    # the listing gives display URIs that are valid UTF-8, and doc ids that are stable
    ids = {key(e): e.doc_id for e in Source(root).iter_entries()}
    assert ids == {key(e): e.doc_id for e in Source(root).iter_entries()}
    assert len(set(ids.values())) == len(ids)
    assert elapsed < 30, f"one pass took {elapsed:.1f} s"


# ---------------------------------------------------------------------- S3
def test_s3_bad_objects(s3_endpoint, s3_client):
    objects = bad_s3_objects()
    assert len({k for k, _, _ in objects}) == len(objects)
    s3_client.create_bucket(Bucket="lake")
    for key, body, _ in objects:
        s3_client.put_object(Bucket="lake", Key=f"docs/{key}", Body=body)
    s3_client.put_object(Bucket="lake", Key="docs-other/x.pdf", Body=b"%PDF")  # outside the prefix

    class Exp:
        def __init__(self, expect):
            self.expect, self.render = expect, {}

    expected = {key: Exp(expect) for key, _, expect in objects}
    prefix = "s3://lake/docs/"

    def key(entry):
        assert entry.uri.startswith(prefix) and entry.raw_path is None
        return entry.uri[len(prefix):]

    creds = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "aws_region": "us-east-1",
             "aws_endpoint": s3_endpoint}
    first = run_all(Source("s3://lake/docs", creds), expected, key)
    check(first, expected, [tempfile.gettempdir() + "/", s3_endpoint, "127.0.0.1"])
    assert run_all(Source("s3://lake/docs", creds), expected, key) == first
