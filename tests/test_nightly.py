"""The nightly incremental run: cost follows change, failures keep good data, one writer, whole documents.

Runs on a local Ray (2 CPUs) shared by this module; no OCR (``--ocr none``) unless a test needs words.
The crash, fault and scale tests are in ``tests/test_faults.py`` (slow).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.config import IndexConfig
from snappy.ids import doc_id_for
from snappy.storage import IndexStore
from snappy.testing.synth import write_page_corpus

REPO = Path(__file__).resolve().parent.parent
DPI = 50.0  # small pages: these tests are about the run, not the pixels


def config(src: Path, idx: Path, **kw) -> IndexConfig:
    kw.setdefault("retain_s", 3600.0)
    return IndexConfig(str(src), str(idx), encoder="lexical", ocr="none", dpi=DPI, **kw)


def live_state(store: IndexStore) -> dict:
    """doc uri -> (status, sorted page numbers) of what a reader sees now."""
    snap = store.snapshot()
    docs = store.documents(["doc_id", "uri", "status", "gen", "page_count"], snap=snap)
    pages = store.read("pages", ["doc_id", "page_number"], snap=snap,
                       documents=docs.select(["doc_id", "gen", "status"]))
    by_doc: dict[str, list[int]] = {}
    for p in pages.to_pylist():
        by_doc.setdefault(p["doc_id"], []).append(p["page_number"])
    return {d["uri"]: (d["status"], sorted(by_doc.get(d["doc_id"], []))) for d in docs.to_pylist()}


def run(cfg: IndexConfig) -> dict:
    from pipelines.index import run_index

    return run_index(cfg)


# ---------------------------------------------------------------------- cost follows change
NO_CHANGE_PROBE = r"""
import json, os, sys, time
root = sys.argv[1]
opened = []
def hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes)):
        p = os.fsdecode(args[0])
        if p.startswith(root):
            opened.append(p)
sys.addaudithook(hook)
from pipelines.config import IndexConfig
from pipelines.index import run_index
t = time.perf_counter()
s = run_index(IndexConfig(root, sys.argv[2], encoder="lexical", ocr="none", dpi=50.0))
wall = time.perf_counter() - t
import sys as _s
print(json.dumps({"opened": opened, "ray_imported": "ray" in _s.modules, "ray": s["ray"], "plan": s["plan"],
                  "commits": s["commits"], "wall": wall}))
"""


def test_nothing_changed_reads_no_document_and_starts_no_ray(ray_session, tmp_path):
    src = tmp_path / "src"
    write_page_corpus(src, pages=6, pages_per_doc=2)
    run(config(src, tmp_path / "idx"))
    out = subprocess.run([sys.executable, "-c", NO_CHANGE_PROBE, str(src), str(tmp_path / "idx")], cwd=REPO,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["opened"] == []  # not one source file was opened
    assert probe["ray"] is None and not probe["ray_imported"]  # no Ray, not even imported
    assert probe["plan"] == {"unchanged": 3} and probe["commits"] == 0


def test_touch_only_updates_the_fingerprint(ray_session, tmp_path):
    src = tmp_path / "src"
    paths = write_page_corpus(src, pages=4, pages_per_doc=2)
    cfg = config(src, tmp_path / "idx")
    run(cfg)
    store = IndexStore(cfg.index)
    gens = {d["uri"]: d["gen"] for d in store.documents().to_pylist()}
    shutil.copy(paths[0], tmp_path / "copy.pdf")
    os.replace(tmp_path / "copy.pdf", paths[0])  # same bytes, new inode and mtime
    again = run(cfg)
    assert again["plan"] == {"changed": 1, "unchanged": 1}
    assert again["documents"]["touched"] == 1 and again["documents"]["indexed"] == 0 and again["pages"] == 0
    after = {d["uri"]: d for d in store.documents().to_pylist()}
    assert {u: d["gen"] for u, d in after.items()} == gens  # the pages were not rewritten
    assert after[str(paths[0])]["mtime_ns"] == os.stat(paths[0]).st_mtime_ns
    assert run(cfg)["plan"] == {"unchanged": 2}  # and the next night skips it without reading


def test_changing_text_layer_reindexes(ray_session, tmp_path):
    src = tmp_path / "src"
    write_page_corpus(src, pages=4, pages_per_doc=2)
    cfg = config(src, tmp_path / "idx", text_layer="off")
    run(cfg)
    assert run(cfg)["plan"] == {"unchanged": 2}
    s = run(replace(cfg, text_layer="auto"))
    assert s["plan"] == {"settings": 2} and s["documents"]["indexed"] == 2
    assert s["settings"]["text_layer"] == "auto"
    assert run(replace(cfg, text_layer="auto"))["plan"] == {"unchanged": 2}


def test_a_changed_document_is_replaced_and_a_vanished_one_pruned_with_limit(ray_session, tmp_path):
    src = tmp_path / "src"
    paths = write_page_corpus(src, pages=8, pages_per_doc=2)  # 4 documents
    cfg = config(src, tmp_path / "idx")
    run(cfg)
    store = IndexStore(cfg.index)
    write_page_corpus(tmp_path / "other", pages=3, pages_per_doc=3, seed=5)
    shutil.copy(tmp_path / "other" / "doc00000.pdf", paths[1])  # doc 1 now has 3 pages
    paths[3].unlink()  # doc 3 left the source
    new = src / "zz-new.pdf"
    shutil.copy(tmp_path / "other" / "doc00000.pdf", new)
    # --limit 1: one document read this run; pruning still sees the whole listing
    s = run(replace(cfg, limit=1, prune=True))
    assert (s["documents"]["indexed"], s["documents"]["deferred"], s["documents"]["pruned"]) == (1, 1, 1)
    state = live_state(store)
    assert str(paths[3]) not in state and len(state) == 3  # only the vanished document was pruned
    assert state[str(paths[1])] == ("indexed", [1, 2, 3])  # changed: replaced whole
    assert state[str(paths[0])] == ("indexed", [1, 2]) and str(new) not in state  # deferred: next run
    s = run(replace(cfg, prune=True))
    assert s["documents"]["indexed"] == 1 and live_state(store)[str(new)] == ("indexed", [1, 2, 3])


def test_transient_failure_keeps_previous_rows_and_is_retried(ray_session, tmp_path, monkeypatch):
    import pipelines.index as index_mod

    src = tmp_path / "src"
    paths = write_page_corpus(src, pages=4, pages_per_doc=2)
    cfg = config(src, tmp_path / "idx")
    run(cfg)
    store = IndexStore(cfg.index)
    before = live_state(store)
    changed = tmp_path / "changed.pdf"
    write_page_corpus(tmp_path / "v2", pages=3, pages_per_doc=3, seed=9)
    shutil.copy(tmp_path / "v2" / "doc00000.pdf", changed)
    os.replace(changed, paths[0])  # the document changes ...
    plan_run = index_mod.plan_run

    def plan_then_vanish(*a, **kw):  # ... and cannot be read when its turn comes (a transient read error)
        plan = plan_run(*a, **kw)
        os.replace(paths[0], tmp_path / "away.pdf")
        return plan

    monkeypatch.setattr(index_mod, "plan_run", plan_then_vanish)
    s = run(cfg)
    assert s["documents"]["retry_later"] == 1 and s["documents"]["failed"] == 0
    assert "deleted or moved since listing" in s["failures"][0]["error"]
    assert live_state(store) == before  # the previous good rows are still served
    row = next(d for d in store.documents().to_pylist() if d["uri"] == str(paths[0]))
    assert (row["status"], row["failure"], row["attempts"]) == ("indexed", "transient", 1)
    monkeypatch.setattr(index_mod, "plan_run", plan_run)
    os.replace(tmp_path / "away.pdf", paths[0])
    s = run(cfg)  # the next night retries it
    assert s["documents"]["indexed"] == 1
    assert live_state(store)[str(paths[0])] == ("indexed", [1, 2, 3])
    row = next(d for d in store.documents().to_pylist() if d["uri"] == str(paths[0]))
    assert (row["error"], row["attempts"]) == (None, 0)


NIGHT = r"""
import json, sys
from pipelines.config import IndexConfig
from pipelines.index import run_index
from snappy.storage import IndexStore
s = run_index(IndexConfig(sys.argv[1], sys.argv[2], encoder="lexical", ocr="none", dpi=50.0,
                          max_attempts=int(sys.argv[3])))
rows = {d["uri"].rsplit("/", 1)[-1]: d for d in IndexStore(sys.argv[2]).documents().to_pylist()}
print(json.dumps({"plan": s["plan"], "ray": s["ray"] is not None, "ray_imported": "ray" in sys.modules,
                  "commits": s["commits"], "snapshot": s["snapshot"],
                  "mem": {k: rows["mem.pdf"][k] for k in ("status", "failure", "attempts", "error")},
                  "status": {k: rows["status.pdf"][k] for k in ("status", "failure", "attempts")}}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's /proc/self/mem")
def test_an_entry_that_never_reads_stops_at_the_cap_then_costs_nothing(ray_session, tmp_path):
    # A symlink to /proc/self/mem: listed as a 0-byte regular file, every read fails (EIO), and its mtime is
    # the lister's start, new every night; /proc/self/status reads (not a PDF: a failed row) with new bytes
    # each time. Each night is a new process here too (joining this module's Ray).
    src = tmp_path / "src"
    write_page_corpus(src, pages=2, pages_per_doc=1)
    os.symlink("/proc/self/mem", src / "mem.pdf")
    os.symlink("/proc/self/status", src / "status.pdf")
    cap = 2
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    nights = []
    for _ in range(cap + 2):
        out = subprocess.run([sys.executable, "-c", NIGHT, str(src), str(tmp_path / "idx"), str(cap)], cwd=REPO,
                             capture_output=True, text=True, timeout=180, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        nights.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert [n["mem"]["attempts"] for n in nights] == [1, 2, 2, 2]  # the cap holds
    assert nights[0]["mem"]["status"] == "pending" and "Input/output error" in nights[0]["mem"]["error"]
    assert all(n["status"] == {"status": "failed", "failure": "document", "attempts": 0} for n in nights)
    assert all(n["ray"] for n in nights[:cap])
    for n in nights[cap:]:  # gave up: waits for a real change; an unchanged night does nothing
        assert n["plan"] == {"unchanged": 2, "gave_up": 1, "failed_unchanged": 1}, n["plan"]
        assert not n["ray"] and not n["ray_imported"] and n["commits"] == 0
        assert n["snapshot"] == nights[cap - 1]["snapshot"]  # no new snapshot


def test_odd_entries_become_rows_with_reasons(ray_session, tmp_path):
    src = tmp_path / "src"
    write_page_corpus(src, pages=2, pages_per_doc=1)
    odd = os.fsencode(src) + b"/latin1-\xe9t\xe9.pdf"
    shutil.copy(src / "doc00000.pdf", odd)
    os.mkfifo(src / "pipe.pdf")
    (src / "folder.pdf").mkdir()
    os.symlink(src / "missing.pdf", src / "dangling.pdf")
    os.symlink(src / "loop-b.pdf", src / "loop-a.pdf")
    os.symlink(src / "loop-a.pdf", src / "loop-b.pdf")
    from snappy.testing.synth import minimal_pdf

    (src / "second-page-huge.pdf").write_bytes(minimal_pdf([(612, 792), (612, 60000)]))  # fails on page 2
    cfg = config(src, tmp_path / "idx")
    s = run(cfg)
    store = IndexStore(cfg.index)
    rows = {d["uri"].rsplit("/", 1)[-1]: d for d in store.documents().to_pylist()}
    assert rows["latin1-\\xe9t\\xe9.pdf"]["status"] == "indexed"
    assert rows["latin1-\\xe9t\\xe9.pdf"]["doc_id"] == doc_id_for(odd)
    assert rows["pipe.pdf"]["error"] == "not a regular file (FIFO)"
    assert rows["folder.pdf"]["error"] == "is a directory, not a document"
    assert rows["dangling.pdf"]["error"] == "broken symbolic link (target missing)"
    assert rows["loop-a.pdf"]["error"] == rows["loop-b.pdf"]["error"] == "symbolic link loop"
    huge = rows["second-page-huge.pdf"]  # page 1 rendered, page 2 over max_side: the document fails whole
    assert (huge["status"], huge["failure"]) == ("failed", "document") and huge["error"].startswith("page 2 is")
    assert s["documents"]["indexed"] == 3 and s["documents"]["failed"] == 6 and s["documents"]["retry_later"] == 0
    assert store.count_rows()["pages"] == 3 and store.dataset("pages").count_rows() == 3  # its page 1 is gone
    assert run(cfg)["plan"] == {"unchanged": 3, "rejected_unchanged": 5, "failed_unchanged": 1}  # recorded once


# ---------------------------------------------------------------------- the attempt ledger
def test_a_retry_after_the_ledger_died_gets_a_new_attempt(ray_session, tmp_path):
    # A document's generation comes from its attempt number: a retry must not repeat the attempt (and so the
    # generation) of the execution that died, even when the ledger actor that counts them is gone.
    from pipelines.guard import LedgerClient, start_ledger

    ray = ray_session
    ledger = start_ledger()

    @ray.remote(max_retries=2)
    def prepare(handle, log: str):
        attempt = LedgerClient(handle, timeout_s=10).enter(["doc:x"])[0][0]
        with open(log, "a") as f:
            f.write(f"{attempt}\n")
        if len(Path(log).read_text().split()) == 1:  # the first execution: the ledger dies, then its worker
            ray.kill(handle)
            os._exit(70)

    log = tmp_path / "attempts"
    ray.get(prepare.remote(ledger, str(log)), timeout=120)
    attempts = [int(x) for x in log.read_text().split()]
    assert len(attempts) == 2 and attempts[0] != attempts[1], attempts


# ---------------------------------------------------------------------- one writer
HOLDER = r"""
import sys, time
from snappy.storage import IndexStore
with IndexStore(sys.argv[1]).writer(run_id="the-other-run"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_second_run_exits_naming_the_holder(ray_session, tmp_path):
    from pipelines.index import EXIT_BUSY, main
    from snappy.storage.lease import LeaseHeld

    src = tmp_path / "src"
    write_page_corpus(src, pages=2, pages_per_doc=1)
    idx = tmp_path / "idx"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(idx), "60"], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LeaseHeld, match=r"run the-other-run \(host .*, pid %d\) since" % holder.pid):
            run(config(src, idx))
        t = time.monotonic()
        assert main(["--source", str(src), "--index", str(idx), "--ocr", "none", "--lease-wait-s", "1"]) == EXIT_BUSY
        assert 0.9 < time.monotonic() - t < 30
        assert not (idx / "documents.lance").exists()  # nothing was written
    finally:
        holder.kill()
        holder.wait()
    s = run(config(src, idx))  # the holder died: its lease is taken over at once (same host)
    assert s["documents"]["indexed"] == 2


# ---------------------------------------------------------------------- readers and commits
def test_readers_during_commits_see_whole_documents(ray_session, tmp_path):
    src = tmp_path / "src"
    write_page_corpus(src, pages=36, pages_per_doc=3)  # 12 documents of 3 pages
    cfg = config(src, tmp_path / "idx", commit_every_docs=2, write_rows=3, housekeeping=False)
    store = IndexStore(cfg.index)
    seen, bad, stop = set(), [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                snap = store.snapshot()
                if snap is None:
                    continue
                docs = store.documents(["doc_id", "gen", "status", "page_count", "uri"], snap=snap)
                pages = store.read("pages", ["doc_id", "page_number"], snap=snap,
                                   documents=docs.select(["doc_id", "gen", "status"]))
                got: dict[str, list[int]] = {}
                for p in pages.to_pylist():
                    got.setdefault(p["doc_id"], []).append(p["page_number"])
                for d in docs.to_pylist():
                    if sorted(got.get(d["doc_id"], [])) != list(range(1, (d["page_count"] or 0) + 1)):
                        bad.append((snap.seq, d["uri"], got.get(d["doc_id"])))
                if set(got) - set(docs.column("doc_id").to_pylist()):
                    bad.append((snap.seq, "pages without a document", sorted(got)))
                seen.add(snap.seq)
            except FileNotFoundError:
                continue

    t = threading.Thread(target=reader)
    t.start()
    try:
        first = run(cfg)
        write_page_corpus(src, pages=36, pages_per_doc=3, seed=1)  # every document changes
        second = run(cfg)
    finally:
        stop.set()
        t.join()
    assert first["commits"] >= 4 and second["commits"] >= 4
    assert len(seen) >= 4 and bad == []
    assert all(v == ("indexed", [1, 2, 3]) for v in live_state(store).values())


def test_five_full_runs_stay_within_1_3x_the_size_of_one(ray_session, tmp_path):
    src = tmp_path / "src"
    write_page_corpus(src, pages=12, pages_per_doc=3)
    cfg = config(src, tmp_path / "idx", retain_s=0.0)  # runs far apart in time, as at night
    run(cfg)
    one = _du(tmp_path / "idx")
    for _ in range(4):
        run(replace(cfg, incremental=False))
    five = _du(tmp_path / "idx")
    assert five <= 1.3 * one, (one, five)
    store = IndexStore(cfg.index)
    assert store.count_rows()["pages"] == store.dataset("pages").count_rows() == 12
    assert len(store.dataset("pages").versions()) == 1


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------- inspect
def test_inspect_lists_runs_and_detects_damage(ray_session, tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    src = tmp_path / "src"
    write_page_corpus(src, pages=4, pages_per_doc=2)
    (src / "broken.pdf").write_bytes(b"%PDF-1.7 nothing else")
    cfg = config(src, tmp_path / "idx")
    run(cfg)
    run(cfg)
    runner = CliRunner()
    r = runner.invoke(app, ["inspect", cfg.index, "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["intact"] and len(rep["runs"]) == 2 and all(x["status"] == "ok" for x in rep["runs"])
    assert rep["runs"][1]["documents"]["indexed"] == 2 and rep["runs"][0]["documents"]["skipped"] == 3
    assert [f["uri"].rsplit("/", 1)[-1] for f in rep["failed"]] == ["broken.pdf"]
    data = sorted((Path(cfg.index) / "pages.lance" / "data").iterdir())[0]
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # truncate a pages data file
    r = runner.invoke(app, ["inspect", cfg.index])
    assert r.exit_code == 3
    assert "pages" in r.stdout and data.name in r.stdout.replace("\n", "") and "truncated" in r.stdout
