"""The HTTP query service on Ray Serve: a router in front of N shard deployments.

    snappy serve INDEX [--host 127.0.0.1 --port 8000 --replicas 1 --shards 1 --refresh-s 10]
    curl -s localhost:8000/query -H 'content-type: application/json' \\
         -d '{"query": "total amount due", "top_pages": 3, "threshold": "p50"}'

- ``POST /query`` {query, top_pages=5, threshold="gap", method="iou", level="block"} -> the same JSON list as
  ``snappy query --json``; the snapshot it was answered from is in the ``X-Snappy-Snapshot`` header.
  A request that cannot be searched gets 400 with ``{"error": reason, "field": ...}``.
- ``GET /healthz`` -> 200 ``{"status": "ok", ...}`` once every shard serves a snapshot.
- ``GET /version`` -> the snapshot and table versions served, per shard.

**Shards.** Shard ``i`` of ``n`` is a deployment holding a :class:`snappy.search.Searcher` over the
documents whose id hashes to ``i`` (its part of the candidate structure; vectors are read by row).
The router encodes the query once, asks every shard for its best pages at one snapshot, and merges
them (``snappy.search.merge_pages``): the same pages, scores and regions as one searcher over all.

**Following the nightly run.** Each shard replica polls the index every ``refresh_s`` and loads a new
snapshot next to the one it serves (queries keep running), then keeps both. The router polls too,
and asks for a snapshot only once every shard reports it; a request carries that snapshot number and
every shard answers from exactly that snapshot (loading it first if a replica is behind), so an
answer never mixes snapshots and a swap fails no request. Table versions stay readable for the
index's retention (1 hour by default, ``docs/storage.md``), far longer than a poll.
"""
# (no `from __future__ import annotations`: FastAPI must see the real types through Serve's class-based views)

import asyncio
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from snappy.blocks import DEFAULT_LEVEL
from snappy.propagation import DEFAULT_THRESHOLD
from ray import serve

log = logging.getLogger("pipelines.serve")


@dataclass(frozen=True)
class ServeConfig:
    index: str  # index location (folder or s3://)
    encoder: str | None = None  # query encoder (default: the index's own)
    shards: int = 1
    replicas: int = 1  # router replicas (HTTP, query encoding)
    shard_replicas: int = 1
    refresh_s: float = 10.0  # how often to look for a newer snapshot
    max_query_chars: int = 2000
    max_top_pages: int = 100
    max_body_bytes: int = 64 << 10  # a larger request body gets 413 before it is read
    mode: str = "auto"  # search mode (snappy.search.SearchOptions)
    s3_endpoint: str | None = None
    s3_region: str | None = None
    shard_num_cpus: float = 0.5
    router_num_cpus: float = 0.5

    def __post_init__(self) -> None:
        if self.shards < 1 or self.replicas < 1 or self.shard_replicas < 1:
            raise ValueError("shards, replicas and shard_replicas must be >= 1")
        if self.refresh_s <= 0:
            raise ValueError("refresh_s must be > 0")

    def storage_options(self):
        from snappy.storage.fs import S3Settings

        return S3Settings(endpoint=self.s3_endpoint, region=self.s3_region)


class ShardImpl:
    """One shard: a Searcher over its documents, the last two snapshots' states, a refresher."""

    def __init__(self, config: ServeConfig, shard: int):
        from snappy.search import Searcher, SearchOptions

        self.config, self.shard = config, shard
        self.searcher = Searcher(config.index, encoder=None, storage_options=config.storage_options(),
                                 options=SearchOptions(mode=config.mode), shard=(shard, config.shards))
        self._states = {self.searcher.state.snap.seq: self.searcher.state}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._refresh_loop, name="snappy-refresh", daemon=True).start()

    def close(self) -> None:
        """Stop the refresher (Serve drops the replica; tests close in-process shards)."""
        self._stop.set()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.config.refresh_s):
            try:
                self.load_latest()
            except Exception as e:  # keep serving what we have; try again next tick
                log.warning("shard %d: refresh failed: %s", self.shard, e)

    def load_latest(self) -> int:
        snap = self.searcher.store.snapshot()
        if snap is not None and snap.seq not in self._states:
            self._add(self.searcher.load(snap))
        return max(self._states)

    def _add(self, state) -> None:
        with self._lock:
            self._states[state.snap.seq] = state
            for old in sorted(self._states)[:-2]:  # keep the two newest: requests on the older one finish
                del self._states[old]
            self.searcher.state = self._states[max(self._states)]

    def _state(self, seq: int | None):
        with self._lock:
            if seq is None:
                return self._states[max(self._states)]
            state = self._states.get(seq)
        if state is not None:
            return state
        from snappy.storage import snapshot as snapshots

        snap = snapshots.get(self.searcher.store.files, seq)  # a replica behind the others: catch up now
        if snap is None:
            raise LookupError(f"snapshot {seq} is not available")
        state = self.searcher.load(snap)
        self._add(state)
        return state

    def search(self, vectors: list, top_pages: int, threshold: str, method: str, seq: int | None,
               level: str = DEFAULT_LEVEL) -> dict:
        state = self._state(seq)
        (pages,) = self.searcher.search_vectors(vectors, top_pages, threshold, method, state, level)
        return {"seq": state.snap.seq, "pages": [p.to_dict() for p in pages]}

    def version(self) -> dict:
        with self._lock:
            seqs = sorted(self._states)
            state = self._states[seqs[-1]]
        return {"shard": self.shard, "snapshots": seqs, "versions": dict(state.snap.versions), "pages": state.n_pages,
                "mode": state.mode, "encoder_id": state.encoder_id, "pid": os.getpid()}


class RouterImpl:
    """Validates, encodes once, fans out to the shards at one snapshot, merges."""

    def __init__(self, config: ServeConfig, shards: list):
        self.config, self.shards = config, shards
        self._encoder = None
        self.seq: int | None = None
        self.encoder_id: str | None = None
        self._task = None
        self._started: asyncio.Future | None = None

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

    def encoder(self):
        if self._encoder is None:
            from snappy.encoders import make_encoder

            spec = self.config.encoder or self.encoder_id
            if spec is None:
                raise LookupError("the index has no pages yet")
            self._encoder = make_encoder(spec)
        return self._encoder

    async def query(self, body: Any) -> tuple[int, list[dict]]:
        """(snapshot, result pages). QueryError for a request that cannot be searched."""
        from snappy.search import QueryError, merge_pages
        from snappy.search.query import check_level, check_query, check_request

        if not isinstance(body, dict):
            raise QueryError("the body must be a JSON object with a 'query'", "body")
        text = check_query(body.get("query"), self.config.max_query_chars)
        top_pages, threshold, method = check_request(body.get("top_pages", 5),
                                                     body.get("threshold", DEFAULT_THRESHOLD),
                                                     body.get("method", "iou"), self.config.max_top_pages)
        level = check_level(body.get("level", DEFAULT_LEVEL))
        vectors = await asyncio.to_thread(self.encoder().embed_queries, [text])
        seq = self.seq
        for _ in range(3):
            parts = await asyncio.gather(*(s.search.remote(vectors, top_pages, str(threshold), method, seq, level)
                                           for s in self.shards))
            seqs = {p["seq"] for p in parts}
            if len(seqs) == 1:
                return seqs.pop(), merge_pages([p["pages"] for p in parts], top_pages)
            seq = max(seqs)  # a shard could not serve the requested snapshot: ask all for the newest
        raise RuntimeError(f"shards answered from different snapshots {sorted(seqs)}")

    async def version(self) -> dict:
        infos = await asyncio.gather(*(s.version.remote() for s in self.shards))
        return {"snapshot": self.seq, "encoder_id": self.encoder_id, "index": self.config.index, "shards": infos}


api = FastAPI(title="snappy", description="query -> pages -> regions (box, text, score)")


@serve.deployment(name="router")
@serve.ingress(api)
class Router:
    """The HTTP ingress: a :class:`RouterImpl` behind FastAPI routes."""

    def __init__(self, config: ServeConfig, shards: list):
        self.config = config
        self.impl = RouterImpl(config, shards)

    async def _ready(self) -> RouterImpl:
        await self.impl.ready()
        return self.impl

    @api.post("/query")
    async def query(self, request: Request):
        from snappy.search import QueryError

        size = request.headers.get("content-length")
        limit = self.config.max_body_bytes
        if size is not None and size.isdigit() and int(size) > limit:
            return JSONResponse({"error": f"the request body is {size} bytes, over the limit of {limit}",
                                 "field": "body"}, status_code=413)
        try:
            body = await request.json()
        except Exception:
            return JSONResponse({"error": "the body is not valid JSON", "field": "body"}, status_code=400)
        try:
            seq, pages = await (await self._ready()).query(body)
        except QueryError as e:
            return JSONResponse({"error": e.reason, "field": e.field}, status_code=400)
        except LookupError as e:
            return JSONResponse({"error": str(e)}, status_code=503)
        return JSONResponse(pages, headers={"X-Snappy-Snapshot": str(seq)})

    @api.get("/healthz")
    async def healthz(self):
        if not self.impl.starting().done():  # shards still loading: answer now, do not hold the probe
            return JSONResponse({"status": "starting"}, status_code=503)
        impl = await self._ready()
        if impl.seq is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        return {"status": "ok", "snapshot": impl.seq, "shards": len(impl.shards)}

    @api.get("/version")
    async def version(self):
        return await (await self._ready()).version()


def build_app(args: dict | ServeConfig):
    """Ray Serve application builder (``serve run snappy_pipelines.serve:build_app index=...``, or a
    RayService's ``serveConfigV2``): ``args`` are :class:`ServeConfig` fields."""
    config = args if isinstance(args, ServeConfig) else ServeConfig(**{k: _cast(k, v) for k, v in dict(args).items()})
    shard = serve.deployment(ShardImpl, ray_actor_options={"num_cpus": config.shard_num_cpus})
    shards = [shard.options(name=f"shard-{i}", num_replicas=config.shard_replicas).bind(config, i)
              for i in range(config.shards)]
    return Router.options(num_replicas=config.replicas,
                          ray_actor_options={"num_cpus": config.router_num_cpus}).bind(config, shards)


def _cast(key: str, value: Any) -> Any:
    """serveConfigV2 / ``serve run`` args arrive as strings: cast them to ServeConfig's field types."""
    types = {f: t for f, t in ServeConfig.__annotations__.items()}
    t = types.get(key, "str")
    if value is None or not isinstance(value, str):
        return value
    if t.startswith("int"):
        return int(value)
    if t.startswith("float"):
        return float(value)
    return value


def run(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, blocking: bool = True,
        num_cpus: int | None = None):
    """Start Ray (a local one bound to 127.0.0.1 unless ``$RAY_ADDRESS``), Serve on ``host:port``, the app.
    Blocking: serve until Ctrl-C or SIGTERM, then shut Serve (and a Ray this call started) down."""
    import ray

    started = False
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init()
        else:
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            ray.init(address="local", include_dashboard=False, num_cpus=num_cpus)
            started = True
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
        if started:
            ray.shutdown()
    return None
