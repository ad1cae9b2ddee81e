"""The query service: shards equal one searcher, the router's checks, and the Ray Serve app over HTTP
(endpoints, every 4xx, following a commit without a failed request or a mixed snapshot)."""
from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from pipelines.serve import RouterImpl, ServeConfig, ShardImpl
from snappy.search import QueryError, Searcher, SearchOptions, merge_pages
from snappy.search.candidates import CandidateOptions
from snappy.storage import snapshot as snapshots
from snappy.storage.synthetic import SynthDocSpec, SynthPageSpec, write_index

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
    from snappy.search.maintain import CandidateSettings, update_candidates
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
        seq, pages = asyncio.run(router.query({"query": "total amount due", "top_pages": 4}))
        assert seq == router.seq
        expect = [p.to_dict() for p in Searcher(index).query("total amount due", top_pages=4)]
        _same(pages, expect)
        for body, field in (({"query": ""}, "query"), ({"query": "  "}, "query"), ({"query": "?!"}, "query"),
                            ({"query": "x" * 2001}, "query"), ({"query": "tax", "top_pages": 0}, "top_pages"),
                            ({"query": "tax", "top_pages": 101}, "top_pages"),
                            ({"query": "tax", "top_pages": "3"}, "top_pages"),
                            ({"query": "tax", "threshold": "p500"}, "threshold"),
                            ({"query": "tax", "method": "sum"}, "method"), ({"query": "tax", "level": "page"}, "level"),
                            ({"query": "___"}, "query"), (["tax"], "body"), ({}, "query")):
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
        seq, _ = asyncio.run(router.query({"query": "tax"}))
        assert seq == old + 1 and old + 1 in shards[1]._states
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
        seq, pages = await router.query({"query": "total amount due", "top_pages": 2})
        assert seq == router.seq and pages
        router._task.cancel()

    try:
        asyncio.run(scenario())
    finally:
        shard.close()


# ---------------------------------------------------------------- Ray Serve over HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body, timeout: float = 60) -> tuple[int, dict | list, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), {k.lower(): v for k, v in e.headers.items()}


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The Ray Serve app (router + 2 shards) on 127.0.0.1, over an index this module writes to."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray import serve

    from pipelines.serve import build_app

    uri = str(tmp_path_factory.mktemp("served") / "idx")
    write_index(uri, corpus(40))
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = ServeConfig(index=uri, shards=2, refresh_s=0.5, router_num_cpus=0.25, shard_num_cpus=0.25)
    serve.run(build_app(config), name="snappy", route_prefix="/", blocking=False)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while _get(f"{base}/healthz")[0] != 200:
        assert time.monotonic() < deadline, "the service did not become healthy in 120 s"
        time.sleep(0.5)
    try:
        yield base, uri
    finally:
        serve.shutdown()
        if started:
            ray.shutdown()


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
