"""The query service: shards equal one searcher, the router's checks, and the Ray Serve app over HTTP
(endpoints, every 4xx, following a commit without a failed request or a mixed snapshot)."""
from __future__ import annotations

import asyncio
import glob
import importlib
import itertools
import json
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from pipelines.serve import RouterImpl, ServeConfig, ShardImpl, config_from_args
from snappy.search import QueryError, Searcher, SearchOptions, merge_pages
from snappy.candidates.centroids import CandidateOptions
from snappy.storage import snapshot as snapshots
from snappy.testing.synth_index import SynthDocSpec, SynthPageSpec, write_index

REPO = Path(__file__).resolve().parent.parent

WORDS = ("invoice total amount due revenue quarterly annual report signature director customer order "
         "payment tax balance shipping address contract clause term renewal budget forecast audit risk "
         "salary bonus pension claim policy premium deductible vendor supplier warehouse stock").split()


def corpus(n_docs: int, seed: int = 0, prefix: str = "doc") -> list[SynthDocSpec]:
    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        pages = []
        for _ in range(rng.randint(1, 2)):
            regions = [((40, 60 + 120 * r, 760, 110 + 120 * r), " ".join(rng.choices(WORDS, k=rng.randint(3, 7))))
                       for r in range(rng.randint(2, 5))]
            pages.append(SynthPageSpec((800, 1000), regions))
        docs.append(SynthDocSpec(f"mem://{prefix}-{d:03d}.pdf", pages))
    return docs


QUERIES = ["total amount due", "quarterly revenue report", "signature of the director", "insurance policy premium",
           "warehouse stock supplier"]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("serve") / "idx")
    write_index(uri, corpus(40))
    return uri


def _same(a: list[dict], b: list[dict]) -> None:
    """Same pages in the same order, same scores, same regions."""
    assert [p["page_id"] for p in a] == [p["page_id"] for p in b]
    assert [p["rank"] for p in a] == list(range(1, len(a) + 1))
    np.testing.assert_allclose([p["score"] for p in a], [p["score"] for p in b], rtol=1e-5, atol=1e-5)
    for pa_, pb in zip(a, b):
        assert [r["region_id"] for r in pa_["regions"]] == [r["region_id"] for r in pb["regions"]]
        np.testing.assert_allclose([r["score"] for r in pa_["regions"]], [r["score"] for r in pb["regions"]],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_shards", [2, 3])
def test_shards_merged_equal_one_searcher(index, n_shards):
    one = Searcher(index)
    shards = [Searcher(index, shard=(i, n_shards)) for i in range(n_shards)]
    assert sum(s.n_pages for s in shards) == one.n_pages and all(s.n_pages for s in shards)
    owners = [set(s.state.page_ids) for s in shards]
    assert set().union(*owners) == set(one.state.page_ids) and sum(map(len, owners)) == one.n_pages
    vectors = one.encode(QUERIES)
    expect = one.search_vectors(vectors, top_pages=8, threshold="p50")
    parts = [s.search_vectors(vectors, top_pages=8, threshold="p50") for s in shards]
    for q in range(len(QUERIES)):
        merged = merge_pages([[p.to_dict() for p in part[q]] for part in parts], 8)
        _same(merged, [p.to_dict() for p in expect[q]])


def test_shards_in_candidate_mode_equal_one_searcher(tmp_path):
    from snappy.candidates.settings import CandidateSettings
    from snappy.candidates.maintain import update_candidates
    from snappy.storage import IndexStore

    uri = str(tmp_path / "idx")
    write_index(uri, corpus(60, seed=3))
    with IndexStore(uri).writer() as w:
        assert update_candidates(w, CandidateSettings(min_pages=10, k=16))["action"] == "trained"
    wide = SearchOptions(mode="candidates", candidates=CandidateOptions(nprobe=16, pool=10_000, candidates=10_000))
    one = Searcher(uri, options=wide)
    assert one.state.mode == "candidates"
    shards = [Searcher(uri, options=wide, shard=(i, 2)) for i in range(2)]
    vectors = one.encode(QUERIES)
    expect = one.search_vectors(vectors, top_pages=5)
    parts = [s.search_vectors(vectors, top_pages=5) for s in shards]
    for q in range(len(QUERIES)):
        _same(merge_pages([[p.to_dict() for p in part[q]] for part in parts], 5), [p.to_dict() for p in expect[q]])


class _Local:
    """A Serve deployment handle stand-in: ``handle.method.remote(...)`` awaits the method in-process."""

    def __init__(self, impl):
        self.impl = impl

    def __getattr__(self, name):
        fn = getattr(self.impl, name)

        class _Method:
            @staticmethod
            async def remote(*args):
                return await asyncio.to_thread(fn, *args)
        return _Method


def test_router_validates_merges_and_pins_one_snapshot(tmp_path):
    index = str(tmp_path / "idx")
    write_index(index, corpus(20, seed=5))
    config = ServeConfig(index=index, shards=2, refresh_s=3600)
    shards = [ShardImpl(config, i) for i in range(2)]
    router = RouterImpl(config, [_Local(s) for s in shards])
    try:
        asyncio.run(router.refresh())
        seq, pages, _ = asyncio.run(router.query({"query": "total amount due", "top_pages": 4}))
        assert seq == router.seq
        expect = [p.to_dict() for p in Searcher(index).query("total amount due", top_pages=4)]
        _same(pages, expect)
        for body, field in (({"query": ""}, "query"), ({"query": "  "}, "query"), ({"query": "?!"}, "query"),
                            ({"query": "x" * 2001}, "query"), ({"query": "tax", "top_pages": 0}, "top_pages"),
                            ({"query": "tax", "top_pages": 101}, "top_pages"),
                            ({"query": "tax", "top_pages": "3"}, "top_pages"),
                            ({"query": "tax", "threshold": "p500"}, "threshold"),
                            ({"query": "tax", "method": "sum"}, "method"), ({"query": "tax", "level": "page"}, "level"),
                            ({"query": "___"}, "query"), (["tax"], "body"), ({}, "query"),
                            ({"query": "tax", "target_recall": 0}, "target_recall"),
                            ({"query": "tax", "target_recall": 1.5}, "target_recall"),
                            ({"query": "tax", "target_recall": "0.9"}, "target_recall")):
            with pytest.raises(QueryError) as e:
                asyncio.run(router.query(body))
            assert e.value.field == field, body
        # a replica behind the others catches up to the requested snapshot instead of answering older
        old = router.seq
        write_index(index, corpus(1, seed=99, prefix="late"))
        shards[0].load_latest()  # shard 1 has not polled yet
        asyncio.run(router.refresh())
        assert router.seq == old  # the newest snapshot *every* shard has
        router.seq = old + 1  # ... until it asks for the new one: shard 1 loads it on demand
        seq, _, _ = asyncio.run(router.query({"query": "tax", "target_recall": 0.99}))
        assert seq == old + 1 and old + 1 in shards[1]._states
        # the two queries answered are logged for the nightly calibration (vectors only), once written
        from snappy.storage import querylog
        from snappy.storage.fs import Files

        assert querylog.count(Files(index)) == 0 and router.query_log().flush() == 2
        assert querylog.count(Files(index), router.encoder().encoder_id) == 2
    finally:
        for s in shards:
            s.close()


def test_a_client_that_gives_up_during_start_does_not_cancel_the_start(tmp_path):
    """A health probe that times out while the shards are still loading is cancelled by Serve; the
    router's start must go on (it once stayed cancelled: every later request failed at once)."""
    index = str(tmp_path / "idx")
    write_index(index, corpus(6, seed=3))
    config = ServeConfig(index=index, shards=1, refresh_s=3600)
    shard = ShardImpl(config, 0)
    gate = None

    class _Slow(_Local):
        def __getattr__(self, name):
            fn = getattr(self.impl, name)

            class _Method:
                @staticmethod
                async def remote(*args):
                    await gate.wait()  # the shard is still loading
                    return await asyncio.to_thread(fn, *args)
            return _Method

    async def scenario():
        nonlocal gate
        gate = asyncio.Event()
        router = RouterImpl(config, [_Slow(shard)])
        start = router.starting()
        assert not start.done()  # what /healthz checks: 503 "starting", answered at once
        impatient = asyncio.ensure_future(router.ready())
        await asyncio.sleep(0.05)
        impatient.cancel()  # what Serve does when the client disconnects
        await asyncio.sleep(0.05)
        assert not start.cancelled() and router.starting() is start  # the start goes on, not begun again
        gate.set()
        await asyncio.wait_for(router.ready(), 30)
        assert router.seq is not None and router.seq >= 1
        seq, pages, _ = await router.query({"query": "total amount due", "top_pages": 2})
        assert seq == router.seq and pages
        router._task.cancel()

    try:
        asyncio.run(scenario())
    finally:
        shard.close()


class _Request:
    """What RouterImpl.answer reads of a Starlette request: the headers and the body stream."""

    def __init__(self, chunks, headers: dict | None = None):
        self.headers, self._chunks, self.received = headers or {}, chunks, 0

    async def stream(self):
        for chunk in self._chunks:
            self.received += len(chunk)
            yield chunk


def _answer(router: RouterImpl, request: _Request) -> tuple[int, dict | list, dict]:
    async def scenario():
        r = await router.answer(request)
        if router._task is not None:
            router._task.cancel()
        return r

    r = asyncio.run(scenario())
    return r.status_code, json.loads(r.body), {k.lower(): v for k, v in r.headers.items()}


def _health(router: RouterImpl) -> tuple[int, dict]:
    async def scenario():
        await router.ready()
        r = await router.health()
        router._task.cancel()
        return r

    r = asyncio.run(scenario())
    return r.status_code, json.loads(r.body)


def test_a_body_over_the_limit_is_refused_whatever_the_framing(tmp_path):
    """Content-Length over the limit: 413 unread; no Content-Length (chunked): counted as it arrives,
    413 once past the limit, and the rest is never read (an endless body ends too)."""
    index = str(tmp_path / "idx")
    write_index(index, corpus(4, seed=2))
    config = ServeConfig(index=index, refresh_s=3600, max_body_bytes=1000)
    shard = ShardImpl(config, 0)
    router = RouterImpl(config, [_Local(shard)])
    try:
        endless = itertools.chain([b'{"query": "total amount due", "padding": "'], itertools.repeat(b"x" * 300))
        request = _Request(endless)
        status, answer, _ = _answer(router, request)
        assert status == 413 and answer["field"] == "body" and "limit of 1000 bytes" in answer["error"]
        assert 1000 < request.received <= 1300
        request = _Request([b"{}"], {"content-length": "5000"})
        assert _answer(router, request)[0] == 413 and request.received == 0
        body = json.dumps({"query": "total amount due", "top_pages": 2}).encode()
        status, pages, headers = _answer(router, _Request([body[:5], body[5:17], body[17:]]))
        assert status == 200 and len(pages) == 2 and headers["x-snappy-snapshot"] == str(router.seq)
    finally:
        shard.close()


def test_unexpected_errors_are_json_500_with_one_log_line(tmp_path, caplog):
    index = str(tmp_path / "idx")
    write_index(index, corpus(4, seed=4))
    config = ServeConfig(index=index, refresh_s=3600)
    shard = ShardImpl(config, 0)

    class _Dead(_Local):  # the shard's replica itself fails (what a handle call raises then)
        def __getattr__(self, name):
            if name != "search":
                return super().__getattr__(name)

            class _Method:
                @staticmethod
                async def remote(*args):
                    raise RuntimeError("replica died\n  Traceback (most recent call last): ...")
            return _Method

    def boom(*args, **kwargs):
        raise ValueError("an unexpected bug\nsecond line")

    body = json.dumps({"query": "total amount due"}).encode()
    try:
        for router, expect in ((RouterImpl(config, [_Dead(shard)]), "RuntimeError: replica died"),
                               (RouterImpl(config, [_Local(shard)]), "ValueError: an unexpected bug")):
            if expect.startswith("ValueError"):
                shard.searcher.search_vectors = boom  # fails inside the shard
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="pipelines.serve"):
                status, answer, _ = _answer(router, _Request([body]))
            assert status == 500 and expect in answer["error"] and "line" not in answer["error"], answer
            logged = [r for r in caplog.records if r.name == "pipelines.serve" and r.levelno >= logging.WARNING]
            assert len(logged) == 1 and expect in logged[0].getMessage() and logged[0].exc_info is None, logged
    finally:
        shard.close()


def test_damage_found_by_a_query_turns_health_to_503(tmp_path):
    """A file lost after the shard loaded its snapshot: the query that reads it gets 503 naming it, and
    /healthz says damaged from then on."""
    index = str(tmp_path / "idx")
    write_index(index, corpus(4, seed=6))
    config = ServeConfig(index=index, refresh_s=3600)
    shard = ShardImpl(config, 0)
    router = RouterImpl(config, [_Local(shard)])
    body = json.dumps({"query": "total amount due", "top_pages": 10}).encode()
    try:
        assert _answer(router, _Request([b'{"query": "invoice", "top_pages": 1}']))[0] == 200
        served = router.seq
        path = sorted(glob.glob(f"{index}/regions.lance/data/*.lance"))[0]
        os.remove(path)
        status, answer, _ = _answer(router, _Request([body]))
        assert status == 503 and answer["table"] == "regions" and answer["file"].endswith(os.path.basename(path))
        assert answer["cause"] == "data file missing"
        status, health = _health(router)
        assert status == 503 and health == {"status": "damaged", "problems": answer["problems"]}
        asyncio.run(router.refresh())  # the shard keeps reporting it until a newer snapshot loads
        assert router.seq == served and _health(router)[0] == 503
    finally:
        shard.close()


def test_a_damaged_newer_snapshot_is_not_loaded(tmp_path):
    """The nightly run's snapshot lost a file: the shard checks it before loading, keeps serving the
    intact one it has, and stays healthy."""
    from snappy.storage.health import Damaged

    index = str(tmp_path / "idx")
    write_index(index, corpus(4, seed=9))
    config = ServeConfig(index=index, refresh_s=3600)
    shard = ShardImpl(config, 0)
    router = RouterImpl(config, [_Local(shard)])
    try:
        asyncio.run(router.refresh())
        served = router.seq
        before = set(glob.glob(f"{index}/regions.lance/data/*.lance"))
        write_index(index, corpus(1, seed=10, prefix="later"))
        (new,) = set(glob.glob(f"{index}/regions.lance/data/*.lance")) - before
        os.remove(new)
        with pytest.raises(Damaged, match="data file missing") as e:
            shard.load_latest()
        assert [(p.table, p.cause) for p in e.value.problems] == [("regions", "data file missing")]
        asyncio.run(router.refresh())
        assert router.seq == served and shard.version()["snapshots"] == [served]
        assert _health(router) == (200, {"status": "ok", "snapshot": served, "shards": 1})
        status, pages, headers = _answer(router, _Request([b'{"query": "total amount due"}']))
        assert status == 200 and pages and headers["x-snappy-snapshot"] == str(served)
    finally:
        shard.close()


def test_serve_args_cast_to_the_config_field_types(monkeypatch):
    """``serve run ... key=value`` gives strings, a RayService YAML scalars: both become the field types."""
    c = config_from_args({"index": "s3://lake/idx", "shards": "2", "refresh_s": "2.5", "encoder": "lexical",
                          "s3_endpoint": None, "max_body_bytes": 1024, "router_num_cpus": 1, "shard_replicas": 3.0})
    assert (c.index, c.shards, c.refresh_s, c.encoder, c.s3_endpoint, c.max_body_bytes, c.shard_replicas) == (
        "s3://lake/idx", 2, 2.5, "lexical", None, 1024, 3)
    assert type(c.router_num_cpus) is float and c.router_num_cpus == 1.0 and type(c.shard_replicas) is int
    assert config_from_args({k: str(v) for k, v in {"index": "i", "shards": 2, "refresh_s": 10}.items()}) == \
        config_from_args({"index": "i", "shards": 2, "refresh_s": 10})
    for args, key in (({"index": "i", "shard": "2"}, "shard"), ({"index": "i", "shards": "two"}, "shards"),
                      ({"index": "i", "shards": "2.5"}, "shards"), ({"index": "i", "shards": True}, "shards"),
                      ({"index": "i", "refresh_s": "soon"}, "refresh_s"), ({"index": None}, "index"),
                      ({"index": 7}, "index"), ({"shards": 2}, "index"), ({"index": "i", "encoder": 3}, "encoder")):
        with pytest.raises(ValueError, match=f"'{key}'"):
            config_from_args(args)
    from dataclasses import dataclass

    import pipelines.serve as serve_module

    @dataclass(frozen=True)
    class WithFlag:  # ServeConfig has no bool field (yet): the cast of one
        index: str
        flag: bool = False

    monkeypatch.setattr(serve_module, "ServeConfig", WithFlag)
    assert [serve_module._cast("flag", v) for v in ("true", "False", " TRUE ", True)] == [True, False, True, True]
    with pytest.raises(ValueError, match="'flag' must be true or false"):
        serve_module._cast("flag", "yes")


def _no_text_index(uri: str, pdfs) -> str:
    """What `snappy index --ocr none --encoder lexical` writes (pages without regions, zero vectors), without Ray."""
    from snappy.encoders import make_encoder
    from snappy.indexing.document import index_document
    from snappy.ocr import make_ocr
    from snappy.storage import PAGES, IndexSettings, IndexStore, to_table

    enc, ocr = make_encoder("lexical"), make_ocr("none")
    settings = IndexSettings(enc.encoder_id, "none", 72.0)
    docs = [index_document(str(p), Path(p).read_bytes(), enc, ocr, settings) for p in pdfs]
    IndexStore(uri).upsert([d.document for d in docs], to_table(PAGES, [p for d in docs for p in d.pages]))
    return uri


def test_an_index_that_matches_nothing_answers_an_empty_list_and_why(sample_corpus, tmp_path):
    from snappy.search.results import NO_MATCH

    paths, _, _ = sample_corpus
    index = _no_text_index(str(tmp_path / "idx"), paths[:2])
    config = ServeConfig(index=index, shards=2, refresh_s=3600)
    shards = [ShardImpl(config, i) for i in range(2)]
    router = RouterImpl(config, [_Local(s) for s in shards])
    try:
        body = json.dumps({"query": "total amount due", "top_pages": 5}).encode()
        status, pages, headers = _answer(router, _Request([body]))
        assert status == 200 and pages == [] and headers["x-snappy-snapshot"]
        assert headers["x-snappy-reason"] == f"no page matches this query ({NO_MATCH})"
        assert sum(s.version()["pages"] for s in shards) >= 2  # pages there are; none matches
    finally:
        for s in shards:
            s.close()


# ---------------------------------------------------------------- Ray Serve over HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _json(data: bytes):
    try:
        return json.loads(data or b"null")
    except ValueError:  # e.g. a plain-text "Internal Server Error"
        return {"text": data.decode("utf-8", "replace")}


def _post(url: str, body, timeout: float = 60) -> tuple[int, dict | list, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, _json(r.read()), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, _json(e.read()), {k.lower(): v for k, v in e.headers.items()}


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, _json(r.read())
    except urllib.error.HTTPError as e:
        return e.code, _json(e.read())


@pytest.fixture(scope="module")
def serve_base():
    """Ray and Serve's HTTP proxy on 127.0.0.1 for this module; yields the base URL. Ray gets 4 logical
    CPUs: the RayService manifest's app (2 routers + 2 shards at 0.5 CPU) runs beside the fixture's."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray import serve

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        if started:
            ray.shutdown()


def _deploy(app, base: str, name: str, prefix: str, timeout: float = 120) -> tuple[int, dict]:
    """Run ``app`` at ``prefix`` and wait until its /healthz is past "starting"; its (status, body)."""
    from ray import serve

    serve.run(app, name=name, route_prefix=prefix, blocking=False)
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = _get(f"{base}{prefix.rstrip('/')}/healthz")
        except (urllib.error.URLError, ConnectionError):
            status, body = 0, None
        if status == 200 or (status == 503 and isinstance(body, dict) and body.get("status") != "starting"):
            return status, body
        assert time.monotonic() < deadline, f"{name}: no health answer in {timeout} s ({status} {body})"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def service(serve_base, tmp_path_factory):
    """The Ray Serve app (router + 2 shards) on 127.0.0.1, over an index this module writes to."""
    from pipelines.serve import build_app

    uri = str(tmp_path_factory.mktemp("served") / "idx")
    write_index(uri, corpus(40))
    config = ServeConfig(index=uri, shards=2, refresh_s=0.5, router_num_cpus=0.25, shard_num_cpus=0.25)
    status, _ = _deploy(build_app(config), serve_base, "snappy", "/")
    assert status == 200, "the service did not become healthy"
    yield serve_base, uri


def test_http_endpoints_answer_like_the_cli(service):
    from typer.testing import CliRunner

    from pipelines.cli import app

    base, uri = service
    status, health = _get(f"{base}/healthz")
    assert status == 200 and health["status"] == "ok" and health["shards"] == 2
    status, version = _get(f"{base}/version")
    snap = snapshots.latest(Searcher(uri).store.files)
    assert status == 200 and version["snapshot"] == snap.seq
    assert [s["versions"] for s in version["shards"]] == [snap.versions] * 2
    assert sum(s["pages"] for s in version["shards"]) == Searcher(uri).n_pages
    for level in ("line", "block", "auto"):
        body = {"query": "total amount due", "top_pages": 3, "threshold": "top2", "method": "iou", "level": level}
        status, pages, headers = _post(f"{base}/query", body)
        assert status == 200 and int(headers["x-snappy-snapshot"]) == snap.seq
        cli = CliRunner().invoke(app, ["query", uri, "total amount due", "-k", "3", "--threshold", "top2",
                                       "--level", level, "--json"])
        assert cli.exit_code == 0, cli.output
        _same(pages, json.loads(cli.stdout))
        assert pages[0].keys() == json.loads(cli.stdout)[0].keys()
    status, pages, _ = _post(f"{base}/query", {"query": "total amount due"})  # the defaults: blocks, gap
    cli = CliRunner().invoke(app, ["query", uri, "total amount due", "--json"])
    assert status == 200 and pages and all(r["level"] in ("line", "block") for p in pages for r in p["regions"])
    _same(pages, json.loads(cli.stdout))


@pytest.mark.parametrize("body, field", [
    ({"query": ""}, "query"), ({"query": " \t\n "}, "query"), ({"query": "!!! ??? ..."}, "query"),
    ({"query": "revenue " * 300}, "query"), ({"query": "tax", "top_pages": 0}, "top_pages"),
    ({"query": "tax", "top_pages": 1000}, "top_pages"), ({"query": "tax", "threshold": "p500"}, "threshold"),
    ({"query": "tax", "threshold": "sometimes"}, "threshold"), ({"query": "tax", "method": "sum"}, "method"),
    ({"query": "tax", "level": "paragraph"}, "level"), ({"query": "_ - _"}, "query"),
    (b"{not json", "body"), (["tax"], "body"), ({"top_pages": 3}, "query"),
])
def test_bad_requests_get_400_with_a_reason(service, body, field):
    base, _ = service
    status, answer, _ = _post(f"{base}/query", body)
    assert status == 400 and answer["field"] == field and answer["error"], answer


def test_a_one_megabyte_query_is_refused_quickly(service):
    base, _ = service
    t0 = time.monotonic()
    status, answer, _ = _post(f"{base}/query", {"query": "revenue " * 131072})
    assert status == 413 and "bytes" in answer["error"]
    assert time.monotonic() - t0 < 10


def _post_chunked(url: str, chunks, timeout: float = 60) -> tuple[int, dict | list, dict]:
    """POST ``chunks`` with ``Transfer-Encoding: chunked`` (no Content-Length), sent from a thread while
    the answer is read: a server may answer before the body ends."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    conn.putrequest("POST", u.path)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    stop = threading.Event()

    def send():
        try:
            for c in chunks:
                if stop.is_set():
                    return
                conn.sock.sendall(b"%X\r\n%s\r\n" % (len(c), c))
            conn.sock.sendall(b"0\r\n\r\n")
        except OSError:  # answered and closed: the rest is not wanted
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        r = conn.getresponse()
        return r.status, _json(r.read()), {k.lower(): v for k, v in r.getheaders()}
    finally:
        stop.set()
        sender.join(timeout)
        conn.close()


def test_a_chunked_body_over_the_limit_gets_413(service):
    """50 MB sent chunked (no Content-Length) once got 200: the limit was only checked on Content-Length."""
    base, _ = service
    t0 = time.monotonic()
    big = itertools.chain([b'{"query": "total amount due", "padding": "'], (b"x" * 65536 for _ in range(800)), [b'"}'])
    status, answer, _ = _post_chunked(f"{base}/query", big)
    assert status == 413 and answer["field"] == "body" and f"limit of {64 << 10} bytes" in answer["error"], answer
    assert time.monotonic() - t0 < 30
    body = json.dumps({"query": "total amount due", "top_pages": 3}).encode()
    status, pages, headers = _post_chunked(f"{base}/query", [body[:9], body[9:30], body[30:]])
    assert status == 200 and headers["x-snappy-snapshot"]
    assert [p["page_id"] for p in pages] == [p["page_id"] for p in _post(f"{base}/query", json.loads(body))[1]]


def _in_logs(text: str) -> int:
    """How often ``text`` occurs in this Ray session's logs (Serve's replica logs, the workers' output)."""
    import ray

    root = ray._private.worker._global_node.get_session_dir_path()
    n = 0
    for path in glob.glob(f"{root}/logs/**/*", recursive=True):
        if os.path.isfile(path) and path.endswith((".log", ".err", ".out")):
            with open(path, "rb") as f:
                n += f.read().count(text.encode())
    return n


def test_a_damaged_index_answers_503_naming_table_and_file(serve_base, tmp_path):
    """One data file of the regions table gone: /healthz once said ok and every query answered a plain-text
    500 with a traceback in the log. Now: 503 naming the table, the file and the cause, as JSON."""
    from ray import serve

    from pipelines.serve import build_app

    uri = str(tmp_path / "idx")
    write_index(uri, corpus(6, seed=7))
    path = sorted(glob.glob(f"{uri}/regions.lance/data/*.lance"))[0]
    os.remove(path)
    name = os.path.basename(path)
    config = ServeConfig(index=uri, refresh_s=3600, router_num_cpus=0.25, shard_num_cpus=0.25)
    tracebacks = _in_logs("Traceback (most recent call last)")
    try:
        status, health = _deploy(build_app(config), serve_base, "damaged", "/damaged")
        assert status == 503 and health["status"] == "damaged", (status, health)
        (problem,) = health["problems"]
        assert problem["table"] == "regions" and problem["file"].endswith(f"regions.lance/data/{name}")
        assert problem["cause"] == "data file missing"
        for _ in range(3):
            status, answer, _ = _post(f"{serve_base}/damaged/query", {"query": "total amount due"})
            assert status == 503 and (answer["table"], answer["file"], answer["cause"]) == (
                "regions", problem["file"], "data file missing"), answer
            assert name in answer["error"] and answer["problems"] == [problem]
        assert _post(f"{serve_base}/damaged/query", {"query": " "})[0] == 400  # requests are still checked first
        deadline = time.monotonic() + 10  # the logs are written by other processes
        while _in_logs("POST /query 503: the index is damaged") < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _in_logs("POST /query 503: the index is damaged") == 3  # one line per request ...
        assert _in_logs("Traceback (most recent call last)") == tracebacks  # ... and no traceback
    finally:
        serve.delete("damaged")


def _manifest_app() -> dict:
    """applications[0] of infra/k8s/rayservice.yaml's serveConfigV2."""
    import yaml

    (doc,) = [d for d in yaml.safe_load_all((REPO / "infra/k8s/rayservice.yaml").read_text())
              if d and d.get("kind") == "RayService"]
    return yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"][0]


def test_the_rayservice_manifest_app_starts_and_answers(serve_base, tmp_path):
    """The manifest's own import path and args (only the index swapped for a local one) build the app
    Serve runs; it once failed on every string arg (the manifest's ``index: s3://...`` included)."""
    from ray import serve

    app = _manifest_app()
    args = dict(app["args"])
    assert str(args["index"]).startswith("s3://")
    uri = str(tmp_path / "idx")
    write_index(uri, corpus(8, seed=11))
    args["index"] = uri
    for key in ("s3_endpoint", "s3_region"):  # a local index has no endpoint
        args.pop(key, None)
    module, attr = app["import_path"].split(":")
    builder = getattr(importlib.import_module(module), attr)
    try:
        status, health = _deploy(builder(args), serve_base, "manifest", "/manifest", timeout=240)
        assert status == 200 and health["shards"] == int(args.get("shards", 1)), health
        status, pages, headers = _post(f"{serve_base}/manifest/query", {"query": "total amount due", "top_pages": 3})
        assert status == 200 and headers["x-snappy-snapshot"], pages
        _same(pages, [p.to_dict() for p in Searcher(uri).query("total amount due", top_pages=3)])
    finally:
        serve.delete("manifest")


def test_follows_a_commit_without_failed_requests_or_mixed_snapshots(service):
    """Queries run while new documents are committed: every answer is 200, names its snapshot, and is
    exactly what a searcher at that snapshot answers; the new documents become findable."""
    base, uri = service
    stop = threading.Event()
    answers: list[tuple[int, int | None, list]] = []
    queries = ["zebra quokka narwhal", "total amount due"]

    def client(k: int) -> None:
        i = 0
        while not stop.is_set() and i < 400:
            q = queries[(k + i) % 2]
            status, pages, headers = _post(f"{base}/query", {"query": q, "top_pages": 3})
            seq = int(headers["x-snappy-snapshot"]) if status == 200 else None
            answers.append((status, seq, q, pages))
            i += 1

    first = snapshots.latest(Searcher(uri).store.files).seq
    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        for j in range(3):  # three commits: each adds a document with words no other page has
            new = corpus(1, seed=100 + j, prefix=f"new{j}")
            new[0].pages[0].regions.append(((40, 900, 760, 950), "zebra quokka narwhal"))
            write_index(uri, new)
            time.sleep(1.5)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, pages, headers = _post(f"{base}/query", {"query": "zebra quokka narwhal", "top_pages": 3})
            if status == 200 and int(headers["x-snappy-snapshot"]) == first + 3:
                break
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert answers and all(a[0] == 200 for a in answers), [a[:2] for a in answers if a[0] != 200][:5]
    seqs = sorted({a[1] for a in answers})
    assert seqs[0] == first and len(seqs) >= 2, seqs  # the swaps happened while queries ran
    assert int(headers["x-snappy-snapshot"]) == first + 3 and pages[0]["uri"].startswith("mem://new")
    # each answer is exactly the one of its snapshot (nothing mixed from two snapshots)
    reader = Searcher(uri)
    expected = {}
    for status, seq, q, pages in answers:
        if (seq, q) not in expected:
            state = reader.load(snapshots.get(reader.store.files, seq))
            expected[seq, q] = [p.to_dict() for p in reader.search_vectors(reader.encode([q]), 3, state=state)[0]]
        _same(pages, expected[seq, q])


def test_serve_refuses_a_missing_index_before_starting_ray(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    r = CliRunner().invoke(app, ["serve", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "no index here" in r.output


@pytest.mark.slow
def test_snappy_serve_command_answers_and_stops_on_ctrl_c(tmp_path):
    """The CLI as a user runs it: its own local Ray, two shards, answers like `snappy query --json`,
    and SIGINT stops Serve and Ray (the process group it started is gone)."""
    import signal
    import subprocess
    import sys

    uri = str(tmp_path / "idx")
    write_index(uri, corpus(30))
    port = _free_port()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", uri, "--port", str(port), "--shards", "2",
                             "--refresh-s", "1"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "wb"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "not healthy in 180 s: " + (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if _get(f"{base}/healthz")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(1)
        status, body, headers = _post(f"{base}/query", {"query": "total amount due", "top_pages": 3})
        assert status == 200 and headers.get("x-snappy-snapshot")
        cli = subprocess.run([sys.executable, "-m", "pipelines.cli", "query", uri, "total amount due", "--top-pages", "3",
                              "--json"], capture_output=True, text=True, env=env, timeout=120)
        _same(body, json.loads(cli.stdout))
        assert _post(f"{base}/query", {"query": "   "})[0] == 400
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
