"""What an operator wants to know of an index, as one JSON-able dict: ``snappy inspect`` prints it,
the service's ``GET /api/index`` (the search page's index panel) sends it. Tables, snapshot, the
writer lease (held or stale), last runs (dead ones named), failed documents, where the pages' text
came from (text layer or OCR, and why), damage."""
from __future__ import annotations

import logging

from snappy.storage import fs, runlog
from snappy.storage.health import check
from snappy.storage.lease import Lease, state

log = logging.getLogger(__name__)


def index_report(store, runs: int = 5, deep: bool = False, quick: bool = False) -> dict:
    """The report of ``store`` (an :class:`~snappy.storage.IndexStore`). ``quick``: the damage check
    looks at manifests and file sizes only (what a service can afford per request).

    ``no_tables`` says why a location with run records or a lease has no table yet (else None);
    ``empty`` is True when there is nothing at all (no table, lease or run). ``text`` (not with
    ``quick``: it reads two columns of every page) counts live pages by text source and reason.
    ``unreported`` names each part that could not be read, and why (a field left empty otherwise
    would read as "none")."""
    problems = check(store, deep=deep, quick=quick)
    unreported: list[str] = []

    def missing(what: str, e: BaseException) -> None:
        log.warning("%s: cannot read %s: %s", store.uri, what, e)
        unreported.append(f"{what}: {type(e).__name__}: {e}")

    try:
        stats = store.stats()
    except Exception as e:  # a table that cannot even be opened: the problems say which
        missing("the table statistics", e)
        stats = {}
    lease = state(Lease(store.files).current())
    recent = runlog.recent(store.files, runs)
    for r in recent:
        r["dead"] = runlog.dead_reason(r, lease)
    for name, s in stats.items():
        try:
            s["bytes"] = sum(f.size for f in fs.list_files(store.table_uri(name), None, store.storage_options))
        except Exception as e:
            missing(f"the size of {name}", e)
            s["bytes"] = None
    snap = store.snapshot() if stats else None
    try:
        failed = store.failed_documents().to_pylist() if stats else []
    except Exception as e:
        missing("the failed documents", e)
        failed = []
    text = None
    if not quick and "pages" in stats:
        try:
            text = text_sources(store)
        except Exception as e:
            missing("the pages' text sources", e)
    candidates = None
    if "codebook" in stats:
        try:
            candidates = candidate_stage(store)
        except Exception as e:
            missing("the candidate stage's calibration", e)
    return {"index": store.uri, "intact": not problems, "problems": [str(p) for p in problems],
            "snapshot": {"seq": snap.seq, "versions": snap.versions, "run_id": snap.run_id} if snap else None,
            "writer": lease["holder_text"] if lease and lease["state"] != "released" else None,
            "lease": lease, "tables": stats, "runs": recent,
            "no_tables": None if stats or problems else no_tables(recent, lease),
            "empty": not stats and not problems and lease is None and not recent,
            "failed": [{k: v for k, v in f.items() if k != "checked_at"} for f in failed],
            "text": text, "candidates": candidates, "unreported": unreported}


def candidate_stage(store) -> dict:
    """The codebook's size and what its calibration measured (snappy.candidates.calibrate: the estimated
    recall@10 of the budgets it chose, and those budgets); ``calibration`` None when not measured yet."""
    import json

    ds = store.dataset("codebook")
    cols = [c for c in ("codebook_id", "calibration") if c in ds.schema.names]
    t = ds.to_table(columns=cols, limit=1)
    raw = t.column("calibration")[0].as_py() if "calibration" in cols and t.num_rows else None
    out = {"centroids": ds.count_rows(), "calibration": None}
    if raw:
        c = json.loads(raw)
        b = c["chosen"]
        out["calibration"] = {"target_recall": c["target"], "estimated_recall": round(c["estimate"], 3),
                              "queries": c["queries"], "logged_queries": c["logged"], "pages": c["n_pages"],
                              "measured_at": c["measured_at"],
                              "budgets": {k: b[k] for k in ("probe_budget", "pool", "candidates", "max_candidates")}}
    out["query_log"] = query_log(store)
    return out


def query_log(store) -> dict:
    """What the services logged for the calibration (snappy.storage.querylog): queries, files, newest."""
    import time

    from snappy.storage.querylog import log_files

    files = log_files(store.files)
    newest = max((f.at for f in files), default=None)
    return {"queries": sum(f.count for f in files), "files": len(files),
            "newest": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(newest)) if newest else None}


def text_sources(store) -> dict | None:
    """Live pages by ``text_source`` (pdf | ocr | pdf+ocr; "unrecorded": indexed before snappy kept
    it) and by ``text_code`` (why)."""
    import pyarrow.compute as pc

    have = set(store.dataset("pages").schema.names)
    if "text_source" not in have:  # an index no run has written to since the text layer came
        return {"pages_by_source": {"unrecorded": store.read("pages", ["page_id"]).num_rows}, "pages_by_reason": {}}
    t = store.read("pages", ["text_source", "text_code"])

    def counts(col) -> dict:
        vc = pc.value_counts(pc.fill_null(t.column(col), "unrecorded").combine_chunks())
        pairs = zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())
        return dict(sorted(pairs, key=lambda kv: (-kv[1], kv[0])))

    return {"pages_by_source": counts("text_source"), "pages_by_reason": counts("text_code")}


def no_tables(recent: list[dict], lease: dict | None) -> str | None:
    """Why a location with run records or a lease has no table yet, in one line (None: nothing there)."""
    if not recent:
        return "no table yet; only a writer lease is recorded" if lease else None
    r = recent[0]
    run, status = f"run {r['run_id']}", r.get("status")
    if status == "running" and r.get("dead"):
        return f"no table yet: {run} died before its first commit ({r['dead']}); the next run starts again"
    if status == "running":
        return f"no table yet: {run} is running and has not committed yet"
    if status in ("failed", "died"):
        return f"no table yet: {run} {status} before its first commit ({r.get('error') or 'no reason recorded'})"
    return f"no table yet: {run} ended '{status}' without writing one"
