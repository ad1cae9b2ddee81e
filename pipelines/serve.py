"""The HTTP query service on Ray Serve: a router in front of N shard deployments.

    snappy serve INDEX [--host 127.0.0.1 --port 8000 --replicas 1 --shards 1 --refresh-s 10]
    curl -s localhost:8000/query -H 'content-type: application/json' \\
         -d '{"query": "total amount due", "top_pages": 3, "threshold": "p50"}'

- ``POST /query`` {query, top_pages=5, threshold="gap", method="iou", level="auto", target_recall=null} -> the same JSON list as
  ``snappy query --json``: only pages that match the query; an empty list names why in the
  ``X-Snappy-Reason`` header. The snapshot it was answered from is in the ``X-Snappy-Snapshot`` header.
  A request that cannot be searched gets 400 with ``{"error": reason, "field": ...}``; a body over
  ``max_body_bytes`` gets 413 (chunked or not); a damaged index 503 ``{"error", "table", "file", "cause",
  "problems"}``; anything else that fails 500 ``{"error": ...}``. Each failure is one log line.
- ``GET /healthz`` -> 200 ``{"status": "ok", ...}`` once every shard serves a snapshot; 503 ``{"status":
  "starting"}`` before, 503 ``{"status": "damaged", "problems": [...]}`` when a shard found the index damaged.
- ``GET /version`` -> the snapshot and table versions served, per shard.
- ``GET /`` -> the search page (``pipelines/ui/``: plain HTML/CSS/JS, no external resource, a strict
  Content-Security-Policy); ``GET /pages/{page_id}/image?w=800`` -> the stored page JPEG, scaled to
  ``w`` pixels wide (cached); ``GET /api/index`` -> what ``snappy inspect --json`` reports.
  ``POST /query`` with ``"patch_maps": true`` adds to each page a ``map``: patch boxes and the
  similarity of each query token (``tokens``, ``token_scores``) and of the best one (``max``).

**Shards.** Shard ``i`` of ``n`` is a deployment holding a :class:`snappy.search.Searcher` over the
documents whose id hashes to ``i`` (its part of the candidate structure; vectors are read by row).
The router encodes the query once, asks every shard for its best pages at one snapshot, and merges
them (``snappy.search.merge_pages``): the same pages, scores and regions as one searcher over all.
Before a shard loads a snapshot it checks the snapshot's manifests and files (a missing or truncated
file: the snapshot is not loaded, see ``snappy inspect``); a shard that has nothing intact to serve
answers with the problems, and tries again at every refresh.

**Following the nightly run.** Each shard replica polls the index every ``refresh_s`` and loads a new
snapshot next to the one it serves (queries keep running), then keeps both. The router polls too,
and asks for a snapshot only once every shard reports it; a request carries that snapshot number and
every shard answers from exactly that snapshot (loading it first if a replica is behind), so an
answer never mixes snapshots and a swap fails no request. Table versions stay readable for the
index's retention (1 hour by default, ``docs/storage.md``), far longer than a poll.
"""
# (no `from __future__ import annotations`: FastAPI must see the real types through Serve's class-based views)

import asyncio
import dataclasses
import json
import logging
import os
import re
import signal
import threading
import time
import types
import typing
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from snappy.regions.blocks import DEFAULT_LEVEL
from snappy.regions.propagation import DEFAULT_METHOD, DEFAULT_THRESHOLD
from snappy.search.query import DEFAULT_TOP_PAGES, MAX_QUERY_CHARS, MAX_TOP_PAGES
from ray import serve

log = logging.getLogger("pipelines.serve")

UI_DIR = Path(__file__).with_name("ui")
UI_FILES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
# Nothing but this origin's own script, style and images; no inline script; no framing.
UI_HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                         "connect-src 'self'; base-uri 'none'; form-action 'self'; "
                                         "frame-ancestors 'none'",
              "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
PAGE_ID = re.compile(r"[0-9a-f]{16}-p[0-9]{5}")  # snappy.ids.page_id_for
THUMB_WIDTHS = (64, 4096)  # allowed ?w= of a page image


@dataclass(frozen=True)
class ServeConfig:
    index: str  # index location (folder or s3://)
    encoder: str | None = None  # query encoder (default: the index's own)
    shards: int = 1
    replicas: int = 1  # router replicas (HTTP, query encoding)
    shard_replicas: int = 1
    refresh_s: float = 10.0  # how often to look for a newer snapshot
    max_query_chars: int = MAX_QUERY_CHARS
    max_top_pages: int = MAX_TOP_PAGES
    max_body_bytes: int = 64 << 10  # a larger request body gets 413; reading stops there
    mode: str = "auto"  # search mode (snappy.search.SearchOptions)
    s3_endpoint: str | None = None
    s3_region: str | None = None
    shard_num_cpus: float = 0.5
    router_num_cpus: float = 0.5
    log_queries: bool = True  # log the queries' token vectors (never their text) for the nightly calibration
    query_log_sample: float = 1.0  # share of queries logged

    def __post_init__(self) -> None:
        if self.shards < 1 or self.replicas < 1 or self.shard_replicas < 1:
            raise ValueError("shards, replicas and shard_replicas must be >= 1")
        if self.refresh_s <= 0:
            raise ValueError("refresh_s must be > 0")

    def storage_options(self):
        from snappy.storage.fs import S3Settings

        return S3Settings(endpoint=self.s3_endpoint, region=self.s3_region)


class ServiceError(Exception):
    """A request the service answers with ``status`` and the JSON ``body`` (which has an ``error``)."""

    def __init__(self, status: int, body: dict):
        super().__init__(body["error"])
        self.status, self.body = status, body


def damaged(problems: list[dict]) -> ServiceError:
    """503 naming the first problem's table, file and cause (all of them under ``problems``)."""
    first = problems[0]
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    where = "".join(f"{v}: " for v in (first.get("table"), first.get("file")) if v)
    return ServiceError(503, {"error": f"the index is damaged: {where}{first.get('cause')}{more}",
                              "table": first.get("table"), "file": first.get("file"), "cause": first.get("cause"),
                              "problems": problems})


def _short(e: BaseException) -> str:
    """``Type: first line`` of an exception (of its cause for a Ray task error), for one log line."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        e = cause
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:200] if lines else ''}"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; ServiceError 413 past ``limit`` bytes. Content-Length is checked first; a body
    without one (chunked) is counted as it arrives and reading stops at the limit."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise ServiceError(413, {"error": f"the request body is {size} bytes, over the limit of {limit}",
                                 "field": "body"})
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise ServiceError(413, {"error": f"the request body is over the limit of {limit} bytes",
                                     "field": "body"})
        chunks.append(chunk)
    return b"".join(chunks)


def replica_grpc_on_loopback() -> bool:
    """Ray Serve 2.60 binds each replica's inter-deployment gRPC server on ``[::]`` (every interface),
    with no setting to change it. In a replica of a Ray whose node address is 127.0.0.1 (the local
    Ray ``snappy serve`` starts), bind it on 127.0.0.1 instead; elsewhere (a real cluster, whose
    replicas talk across nodes; no replica at all) change nothing. Runs in the replica's ``__init__``,
    which Serve calls before it starts that server. True if it applied."""
    try:
        import ray
        from ray.serve._private import replica
    except ImportError:
        return False
    if not ray.is_initialized() or ray.util.get_node_ip_address() != "127.0.0.1":
        return False
    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "snappy_loopback", False):
        return original is not None

    def add_port(server, address: str):
        return original(server, "127.0.0.1:" + address[len("[::]:"):] if address.startswith("[::]:") else address)

    add_port.snappy_loopback = True
    replica.add_port_to_grpc_server = add_port
    return True


class ShardImpl:
    """One shard: a Searcher over its documents, the last two snapshots' states, a refresher."""

    def __init__(self, config: ServeConfig, shard: int):
        from snappy.storage import IndexStore

        replica_grpc_on_loopback()

        self.config, self.shard = config, shard
        self.store = IndexStore(config.index, config.storage_options())
        self.searcher = None  # None while no intact snapshot could be loaded
        self.problems: list[dict] = []  # damage found in what this shard serves (or could not load)
        self._states = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_warning = None
        self._images: OrderedDict = OrderedDict()  # (snapshot, page_id, width) -> JPEG bytes
        self._open()
        threading.Thread(target=self._refresh_loop, name="snappy-refresh", daemon=True).start()

    def _open(self) -> None:
        """The Searcher over the latest snapshot; a damaged index is recorded (not raised): the shard
        then answers with the problems and tries again at the next refresh."""
        from snappy.search import Searcher, SearchOptions
        from snappy.storage import IndexDamaged

        try:
            options = SearchOptions(mode=self.config.mode, check_files=True)
            searcher = Searcher(self.store, encoder=None, options=options, shard=(self.shard, self.config.shards))
        except IndexDamaged as e:
            self._damaged(e)
            return
        with self._lock:
            self._states[searcher.state.snap.seq] = searcher.state
            self.problems = []
        self.searcher = searcher

    def _damaged(self, e, record: bool = True) -> list[dict]:
        """The problems ``e`` names, as dicts; recorded (for /healthz, logged once) unless ``record`` is False."""
        from snappy.storage.health import Damaged

        problems = [p.to_dict() for p in e.problems] if isinstance(e, Damaged) else \
            [{"table": None, "file": None, "cause": e.reason}]
        if record:
            with self._lock:
                changed, self.problems = problems != self.problems, problems
            if changed:
                log.warning("shard %d: %s", self.shard, e)
        return problems

    def close(self) -> None:
        """Stop the refresher (Serve drops the replica; tests close in-process shards)."""
        self._stop.set()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.config.refresh_s):
            try:
                self.load_latest()
                self._last_warning = None
            except Exception as e:  # keep serving what we have; try again next tick
                if str(e) != self._last_warning:  # once, not every tick
                    log.warning("shard %d: refresh failed: %s", self.shard, e)
                self._last_warning = str(e)

    def load_latest(self) -> int | None:
        if self.searcher is None:
            self._open()
            return max(self._states, default=None)
        snap = self.store.snapshot()
        if snap is not None and snap.seq not in self._states:
            self._add(self.searcher.load(snap))  # a damaged snapshot raises: the one served stays
        return max(self._states)

    def _add(self, state) -> None:
        with self._lock:
            self._states[state.snap.seq] = state
            for old in sorted(self._states)[:-2]:  # keep the two newest: requests on the older one finish
                del self._states[old]
            self.searcher.state = self._states[max(self._states)]
            if state.snap.seq == max(self._states):
                self.problems = []  # a newer snapshot, checked at load

    def _state(self, seq: int | None):
        with self._lock:
            if seq is None:
                return self._states[max(self._states)]
            state = self._states.get(seq)
        if state is not None:
            return state
        from snappy.storage import snapshot as snapshots

        snap = snapshots.get(self.store.files, seq)  # a replica behind the others: catch up now
        if snap is None:
            raise LookupError(f"snapshot {seq} is not available")
        state = self.searcher.load(snap)
        self._add(state)
        return state

    def search(self, vectors: list, top_pages: int, threshold: str, method: str, seq: int | None,
               level: str = DEFAULT_LEVEL, maps: bool = False, target_recall: float | None = None) -> dict:
        """``{"seq", "pages", "reason"}``, or the damage (``"damaged"``: problems) or an error (``"error"``,
        ``"status"``) as data: the router answers and logs once, no traceback per request."""
        from snappy.storage import IndexDamaged
        from snappy.storage.health import Damaged

        if self.searcher is None:
            if self.problems:
                return {"seq": seq, "damaged": self.problems}
            return {"seq": seq, "error": f"shard {self.shard} has no snapshot loaded", "status": 503}
        try:
            state = self._state(seq)
            (pages,) = self.searcher.search_vectors(vectors, top_pages, threshold, method, state, level, target_recall)
            dicts = [p.to_dict() for p in pages]
            if maps:
                for d in dicts:
                    d["map"] = self.searcher.patch_map(vectors[0], d["page_id"], state)
        except IndexDamaged as e:  # recorded when the check confirmed it (a failed read alone may pass)
            return {"seq": seq, "damaged": self._damaged(e, record=isinstance(e, Damaged))}
        except LookupError as e:
            return {"seq": seq, "error": str(e), "status": 503}
        except Exception as e:
            log.debug("shard %d: search failed", self.shard, exc_info=True)
            return {"seq": seq, "error": _short(e), "status": 500}
        return {"seq": state.snap.seq, "pages": dicts, "reason": pages.reason}

    def image(self, page_id: str, width: int, seq: int | None = None) -> dict:
        """``{"jpeg": bytes}`` of a stored page, ``width`` pixels wide at most; else ``{"status", "error"}``."""
        from snappy.storage import IndexDamaged

        if self.searcher is None:
            return {"status": 503, "error": f"shard {self.shard} has no snapshot loaded"}
        try:
            state = self._state(seq)
            key = (state.snap.seq, page_id, width)
            with self._lock:
                if key in self._images:
                    self._images.move_to_end(key)
                    return {"jpeg": self._images[key]}
            data = _thumbnail(self.searcher.page_jpeg(page_id, state), width)
        except KeyError:
            return {"status": 404, "error": f"no page {page_id} in this index"}
        except IndexDamaged as e:
            return {"status": 503, "error": str(e)}
        except Exception as e:
            return {"status": 500, "error": _short(e)}
        with self._lock:
            self._images[key] = data
            while len(self._images) > 256:
                self._images.popitem(last=False)
        return {"jpeg": data}

    def version(self) -> dict:
        with self._lock:
            seqs = sorted(self._states)
            state = self._states[seqs[-1]] if seqs else None
            problems = list(self.problems)
        return {"shard": self.shard, "snapshots": seqs, "versions": dict(state.snap.versions) if state else {},
                "pages": state.n_pages if state else 0, "mode": state.mode if state else None,
                "encoder_id": state.encoder_id if state else None, "pid": os.getpid(), "problems": problems,
                "candidates": _calibration(state)}


def _calibration(state) -> dict | None:
    """The calibration of the candidate stage a shard serves (estimated recall@10, budgets), or None."""
    index = getattr(state, "index", None)
    cal = index.codebook.calibration if index is not None else None
    return cal.summary() if cal is not None else None


class RouterImpl:
    """Validates, encodes once, fans out to the shards at one snapshot, merges."""

    def __init__(self, config: ServeConfig, shards: list):
        self.config, self.shards = config, shards
        self._encoder = None
        self.seq: int | None = None
        self.encoder_id: str | None = None
        self.problems: list[dict] = []  # damage the shards report
        self._task = None
        self._started: asyncio.Future | None = None
        self._query_log = None  # snappy.storage.querylog.QueryLogger, made with the encoder

    def query_log(self):
        """The logger of this replica's queries (None: logging is off)."""
        if self._query_log is None and self.config.log_queries:
            from snappy.storage.fs import Files
            from snappy.storage.querylog import QueryLogger, QueryLogOptions

            enc = self.encoder()
            self._query_log = QueryLogger(Files(self.config.index, self.config.storage_options()), enc.encoder_id,
                                          QueryLogOptions(sample=self.config.query_log_sample),
                                          prefix=enc.query_prefix)
        return self._query_log

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._refresh_loop())

    def starting(self) -> asyncio.Future:
        """The start (first refresh + the polling loop), begun once, begun again if it failed."""
        s = self._started
        if s is None or (s.done() and (s.cancelled() or s.exception() is not None)):
            self._started = asyncio.ensure_future(self.start())
        return self._started

    async def ready(self) -> None:
        # shield: a client that gives up (Serve cancels its request) must not cancel the start itself
        await asyncio.shield(self.starting())

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_s)
            try:
                await self.refresh()
            except Exception as e:
                log.warning("router: refresh failed: %s", e)

    async def refresh(self) -> None:
        """Serve the newest snapshot every shard has (so requests never make a shard wait)."""
        infos = await asyncio.gather(*(s.version.remote() for s in self.shards))
        common = set(infos[0]["snapshots"]).intersection(*(set(i["snapshots"]) for i in infos[1:]))
        if common:
            self.seq = max(common)
        ids = {i["encoder_id"] for i in infos if i["encoder_id"]}
        self.encoder_id = sorted(ids)[0] if ids else None
        self.problems = _unique([p for i in infos for p in i.get("problems", [])])

    def encoder(self):
        if self._encoder is None:
            from snappy.encoders import make_encoder

            spec = self.config.encoder or self.encoder_id
            if spec is None:
                raise LookupError("the index has no pages yet")
            self._encoder = make_encoder(spec)
        return self._encoder

    async def query(self, body: Any) -> tuple[int, list[dict], str | None]:
        """(snapshot, result pages, why there are none). QueryError for a request that cannot be searched,
        ServiceError for one the index cannot answer now (damaged: 503)."""
        from snappy.search import QueryError, merge_pages
        from snappy.search.query import check_level, check_query, check_request, check_target
        from snappy.search.results import NO_PAGES

        if not isinstance(body, dict):
            raise QueryError("the body must be a JSON object with a 'query'", "body")
        text = check_query(body.get("query"), self.config.max_query_chars)
        top_pages, threshold, method = check_request(body.get("top_pages", DEFAULT_TOP_PAGES),
                                                     body.get("threshold", DEFAULT_THRESHOLD),
                                                     body.get("method", DEFAULT_METHOD), self.config.max_top_pages)
        level = check_level(body.get("level", DEFAULT_LEVEL))
        target = check_target(body.get("target_recall"))
        maps = body.get("patch_maps", False)
        if not isinstance(maps, bool):
            raise QueryError("patch_maps must be true or false", "patch_maps")
        if self.seq is None and self.problems:  # nothing intact to serve
            raise damaged(self.problems)
        vectors = await asyncio.to_thread(self.encoder().embed_queries, [text])
        logger = self.query_log()
        if logger is not None:  # a write (one query in flush_queries) runs off the event loop
            await asyncio.to_thread(logger.record, vectors)
        seq = self.seq
        for _ in range(3):
            parts = await asyncio.gather(*(s.search.remote(vectors, top_pages, str(threshold), method, seq, level,
                                                           maps, target) for s in self.shards))
            found = _unique([p for part in parts for p in part.get("damaged", [])])
            if found:
                self.problems = found
                raise damaged(found)
            for part in parts:
                if "error" in part:
                    raise ServiceError(part["status"], {"error": part["error"]})
            seqs = {p["seq"] for p in parts}
            if len(seqs) == 1:
                pages = merge_pages([p["pages"] for p in parts], top_pages)
                if maps and pages:
                    labels = await asyncio.to_thread(self._token_labels, text, len(vectors[0]))
                    for p in pages:
                        p["map"]["tokens"] = labels
                reasons = [p["reason"] for p in parts if p.get("reason")]
                reason = None if pages or not reasons else next((r for r in reasons if r != NO_PAGES), reasons[0])
                return seqs.pop(), pages, reason
            seq = max(seqs)  # a shard could not serve the requested snapshot: ask all for the newest
        raise RuntimeError(f"shards answered from different snapshots {sorted(seqs)}")

    def _token_labels(self, text: str, n: int) -> list[str]:
        try:
            labels = self.encoder().query_tokens(text)
        except Exception as e:  # labels only name the maps: never fail a query for them
            log.debug("query token labels unavailable: %s", e)
            labels = []
        return labels if len(labels) == n else [f"#{i + 1}" for i in range(n)]

    async def image(self, page_id: str, width: int) -> Response:
        """``GET /pages/{page_id}/image``: 400 for an id that is not a page id, 404 for an unknown one."""
        import pyarrow as pa

        from snappy.search.searcher import shard_of

        if not PAGE_ID.fullmatch(page_id):
            return JSONResponse({"error": "not a page id", "field": "page_id"}, status_code=400)
        width = min(max(int(width), THUMB_WIDTHS[0]), THUMB_WIDTHS[1])
        await self.ready()
        shard = self.shards[int(shard_of(pa.array([page_id]), len(self.shards))[0])]  # its document's shard
        got = await shard.image.remote(page_id, width, self.seq)
        if "jpeg" not in got:
            if got["status"] >= 500:
                log.warning("GET /pages/%s/image %d: %s", page_id, got["status"], got["error"])
            return JSONResponse({"error": got["error"]}, status_code=got["status"])
        return Response(got["jpeg"], media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=300", **UI_HEADERS})

    async def index_info(self) -> JSONResponse:
        """``GET /api/index``: the index report (``snappy inspect``), with the snapshot this service serves."""
        from snappy.storage import IndexStore
        from snappy.storage.report import index_report

        def build() -> dict:
            return index_report(IndexStore(self.config.index, self.config.storage_options()), quick=True)

        try:
            report = await asyncio.to_thread(build)
        except Exception as e:
            log.warning("GET /api/index 500: %s", _short(e))
            return JSONResponse({"error": f"cannot read the index ({_short(e)})"}, status_code=500)
        report["served_snapshot"] = self.seq
        return JSONResponse(json.loads(json.dumps(report, default=str)))

    async def answer(self, request: Request) -> JSONResponse:
        """``POST /query``: every outcome is JSON; a 5xx is one log line (no traceback)."""
        from snappy.search import QueryError
        from snappy.search.results import no_results_message

        try:
            raw = await read_body(request, self.config.max_body_bytes)
            try:
                body = json.loads(raw)
            except ValueError:  # UnicodeDecodeError too
                return JSONResponse({"error": "the body is not valid JSON", "field": "body"}, status_code=400)
            await self.ready()
            seq, pages, reason = await self.query(body)
        except QueryError as e:
            return JSONResponse({"error": e.reason, "field": e.field}, status_code=400)
        except ServiceError as e:
            if e.status >= 500:
                log.warning("POST /query %d: %s", e.status, e.body["error"])
            return JSONResponse(e.body, status_code=e.status)
        except LookupError as e:
            log.warning("POST /query 503: %s", e)
            return JSONResponse({"error": str(e)}, status_code=503)
        except Exception as e:
            log.error("POST /query 500: %s", _short(e))
            log.debug("POST /query 500", exc_info=True)
            return JSONResponse({"error": f"internal error ({_short(e)})"}, status_code=500)
        headers = {"X-Snappy-Snapshot": str(seq)}
        if not pages:
            headers["X-Snappy-Reason"] = no_results_message(reason)
        return JSONResponse(pages, headers=headers)

    async def health(self) -> JSONResponse:
        if not self.starting().done():  # shards still loading: answer now, do not hold the probe
            return JSONResponse({"status": "starting"}, status_code=503)
        try:
            await self.ready()
        except Exception as e:
            log.warning("GET /healthz 503: %s", _short(e))
            return JSONResponse({"status": "error", "error": _short(e)}, status_code=503)
        if self.problems:
            return JSONResponse({"status": "damaged", "problems": self.problems}, status_code=503)
        if self.seq is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok", "snapshot": self.seq, "shards": len(self.shards)})

    async def version(self) -> dict:
        infos = await asyncio.gather(*(s.version.remote() for s in self.shards))
        return {"snapshot": self.seq, "encoder_id": self.encoder_id, "index": self.config.index, "shards": infos}


def _thumbnail(jpeg: bytes, width: int) -> bytes:
    """The JPEG scaled down to ``width`` pixels wide (the stored bytes when it is not wider)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as im:
        if im.width <= width:
            return jpeg
        height = max(1, round(im.height * width / im.width))
        out = io.BytesIO()
        im.convert("RGB").resize((width, height), Image.Resampling.LANCZOS).save(out, "JPEG", quality=82)
        return out.getvalue()


def _ui_file(name: str) -> bytes:
    return (UI_DIR / name).read_bytes()


def _unique(problems: list[dict]) -> list[dict]:
    """Problems in order, each once (every shard checks the same files)."""
    seen, out = set(), []
    for p in problems:
        key = (p.get("table"), p.get("file"), p.get("cause"))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


api = FastAPI(title="snappy", description="query -> pages -> regions (box, text, score)")


@serve.deployment(name="router")
@serve.ingress(api)
class Router:
    """The HTTP ingress: a :class:`RouterImpl` behind FastAPI routes."""

    def __init__(self, config: ServeConfig, shards: list):
        replica_grpc_on_loopback()
        self.config = config
        self.impl = RouterImpl(config, shards)

    async def _ready(self) -> RouterImpl:
        await self.impl.ready()
        return self.impl

    @api.post("/query")
    async def query(self, request: Request):
        return await self.impl.answer(request)

    @api.get("/healthz")
    async def healthz(self):
        return await self.impl.health()

    @api.get("/version")
    async def version(self):
        return await (await self._ready()).version()

    @api.get("/")
    async def page(self):
        return Response(_ui_file("index.html"), media_type="text/html; charset=utf-8", headers=UI_HEADERS)

    @api.get("/ui/{name}")
    async def ui(self, name: str):
        if name not in UI_FILES:
            return JSONResponse({"error": "not found"}, status_code=404)
        return Response(_ui_file(name), media_type=UI_FILES[name], headers={"Cache-Control": "no-cache", **UI_HEADERS})

    @api.get("/pages/{page_id}/image")
    async def page_image(self, page_id: str, w: int = 800):
        return await self.impl.image(page_id, w)

    @api.get("/api/index")
    async def index_info(self):
        return await self.impl.index_info()


def build_app(args: dict | ServeConfig):
    """Ray Serve application builder (``serve run snappy_pipelines.serve:build_app index=...``, or a
    RayService's ``serveConfigV2``): ``args`` are :class:`ServeConfig` fields (see :func:`config_from_args`)."""
    config = config_from_args(args)
    shard = serve.deployment(ShardImpl, ray_actor_options={"num_cpus": config.shard_num_cpus})
    shards = [shard.options(name=f"shard-{i}", num_replicas=config.shard_replicas).bind(config, i)
              for i in range(config.shards)]
    return Router.options(num_replicas=config.replicas,
                          ray_actor_options={"num_cpus": config.router_num_cpus}).bind(config, shards)


def config_from_args(args: dict | ServeConfig) -> ServeConfig:
    """ServeConfig from builder args: strings from ``serve run ... key=value``, YAML scalars from a
    RayService, each cast to its field's type. ValueError naming the key for an unknown key, a missing
    ``index`` or a value that does not fit."""
    if isinstance(args, ServeConfig):
        return args
    args = dict(args)
    if "index" not in args:
        raise ValueError("the argument 'index' (the index location) is required")
    return ServeConfig(**{k: _cast(k, v) for k, v in args.items()})


def _cast(key: str, value: Any) -> Any:
    """``value`` as ServeConfig's field ``key`` types it: int, float, bool ("true"/"false"), str, or None
    where the field is optional."""
    names = [f.name for f in dataclasses.fields(ServeConfig)]
    if key not in names:
        raise ValueError(f"unknown argument {key!r} (ServeConfig takes {', '.join(names)})")
    hint = typing.get_type_hints(ServeConfig)[key]
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"argument {key!r} must not be null")
    kind = next(t for t in options if t is not type(None))
    text = value.strip() if isinstance(value, str) else None
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if text is not None and text.lower() in ("true", "false"):
                return text.lower() == "true"
        elif kind is int and not isinstance(value, bool):
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if text is not None:
                return int(text)
        elif kind is float and not isinstance(value, bool):
            if isinstance(value, (int, float)):
                return float(value)
            if text is not None:
                return float(text)
        elif kind is str and isinstance(value, str):
            return value
    except ValueError:
        pass
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, kind.__name__)
    raise ValueError(f"argument {key!r} must be {expected}, got {value!r}")


def run(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, blocking: bool = True,
        num_cpus: int | None = None, ray_address: str | None = None):
    """Start Ray (``ray_address``, else ``$RAY_ADDRESS``, else a local one on 127.0.0.1), Serve on
    ``host:port``, the app. Blocking: serve until Ctrl-C or SIGTERM, then shut Serve (and a Ray this
    call started) down."""
    from . import proxy
    from .cluster import RayOptions, start_ray

    # Serve's proxy refuses oversized bodies itself (pipelines/proxy.py) in a Ray started here.
    env = ((proxy.CALLBACK_VAR, proxy.CALLBACK), (proxy.LIMIT_VAR, str(config.max_body_bytes)))
    session = start_ray(RayOptions(address=ray_address, num_cpus=num_cpus, env=env))
    serve.start(http_options={"host": host, "port": port})
    handle = serve.run(build_app(config), name="snappy", route_prefix="/", blocking=False)
    log.info("snappy serve: http://%s:%d (index %s, %d shard(s), %d replica(s))", host, port, config.index,
             config.shards, config.replicas)
    if not blocking:
        return handle

    def _stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log.info("snappy serve: shutting down")
        serve.shutdown()
        if session.address == "local":
            session.close()
    return None
