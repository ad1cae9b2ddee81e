"""`snappy inspect` for an operator: runs and the lease before any table; whole paths when piped."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import EXIT_NO_TABLES, app
from snappy.storage import IndexStore, runlog
from snappy.storage.lease import Lease, LeaseRecord, state
from snappy.testing.synth_index import SynthDocSpec, SynthPageSpec, write_index

SNAPPY = Path(sys.executable).with_name("snappy")
runner = CliRunner()

# What run_index does before its first commit: take the lease, write a "running" record. Then die.
DIES_BEFORE_ITS_FIRST_COMMIT = textwrap.dedent("""
    import os, sys, time
    from snappy.storage import IndexStore, runlog
    store = IndexStore(sys.argv[1])
    run_id = runlog.new_run_id()
    with store.writer(run_id, wait_s=0) as writer:
        runlog.write(store.files, {"run_id": run_id, "status": "running", "started_at": time.time(),
                                   "source": "/data/src", "index": store.uri, "host": writer.lease.host,
                                   "pid": writer.lease.pid})
        print(run_id, os.getpid(), flush=True)
        os._exit(9)  # killed: no release, no final record
""")


def _inspect(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed console script, stdout a pipe."""
    return subprocess.run([str(SNAPPY), "inspect", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_a_run_that_died_before_its_first_commit_is_shown_with_its_lease(tmp_path):
    index = tmp_path / "idx"
    r = subprocess.run([sys.executable, "-c", DIES_BEFORE_ITS_FIRST_COMMIT, str(index)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 9, r.stderr
    run_id, pid = r.stdout.split()
    assert not (index / "documents.lance").exists()  # only _runs/ and _lease/

    out = _inspect(str(index))
    assert out.returncode == EXIT_NO_TABLES == 4, out.stdout + out.stderr
    assert "no index tables found" not in out.stdout + out.stderr
    text = " ".join(out.stdout.split())
    assert run_id in text and f"pid {pid}" in text
    assert f"stale lease: held by run {run_id}" in text and f"its process (pid {pid}) is gone" in text
    assert f"running, dead: its process (pid {pid}) is gone" in text
    assert f"no table yet: run {run_id} died before its first commit" in text

    out = _inspect(str(index), "--json")
    assert out.returncode == 4
    report = json.loads(out.stdout)
    lease = report["lease"]
    assert (lease["run_id"], lease["pid"], lease["state"], lease["released"]) == (run_id, int(pid), "stale", False)
    assert lease["started_at"] > 0 and run_id in report["writer"]
    (run,) = report["runs"]
    assert (run["run_id"], run["status"], run["dead"]) == (run_id, "running", f"its process (pid {pid}) is gone")
    assert report["tables"] == {} and report["intact"] and "died before its first commit" in report["no_tables"]
    assert _inspect(str(tmp_path / "nothing")).returncode == 2  # nothing at all stays "no index" (exit 2)


def test_a_first_run_still_running_is_not_called_dead(tmp_path):
    store = IndexStore(str(tmp_path / "idx"))
    run_id = runlog.new_run_id()
    lease = Lease(store.files, run_id=run_id)
    lease.acquire()  # held by this (live) process
    try:
        runlog.write(store.files, {"run_id": run_id, "status": "running", "started_at": time.time(),
                                   "host": lease.host, "pid": lease.pid})
        r = runner.invoke(app, ["inspect", str(store.uri)])
        assert r.exit_code == EXIT_NO_TABLES, r.output
        text = " ".join(r.stdout.split())
        assert f"being written by run {run_id}" in text and "dead" not in text
        assert f"no table yet: run {run_id} is running and has not committed yet" in text
    finally:
        lease.release()
    r = runner.invoke(app, ["inspect", str(store.uri), "--json"])
    report = json.loads(r.stdout)
    assert report["lease"]["state"] == "released" and report["writer"] is None
    assert report["runs"][0]["dead"] == "its lease is released"


def test_dead_reason_and_lease_state():
    now = 1_000_000.0
    rec = LeaseRecord(epoch=3, holder="h", acquired_epoch=2, run_id="r1", host="a", pid=11, started_at=now - 60,
                      expires_at=now + 240)
    alive, dead = (lambda pid: True), (lambda pid: False)
    assert state(None) is None
    assert state(rec, now, "a", alive)["state"] == "held"
    assert state(rec, now, "b", dead)["state"] == "held"  # another host: its pid cannot be checked
    assert (state(rec, now, "a", dead)["state"], state(rec, now, "a", dead)["stale_reason"]) == (
        "stale", "its process (pid 11) is gone")
    assert state(rec, now + 300, "b", alive)["stale_reason"].startswith("it expired at ")
    running = {"run_id": "r1", "status": "running", "host": "a", "pid": 11}
    held = state(rec, now, "b", alive)
    assert runlog.dead_reason(running, held, host="b", alive=alive) is None
    assert runlog.dead_reason(running, held, host="a", alive=dead) == "its process (pid 11) is gone"
    assert runlog.dead_reason({**running, "run_id": "r0"}, held, host="b") == "it does not hold the index's lease"
    assert runlog.dead_reason(running, state(rec, now + 300, "b"), host="b").startswith(
        "its lease is stale (it expired at ")
    assert runlog.dead_reason({**running, "status": "ok"}, None) is None


LONG = "/data/lake/department-of-rather-long-folder-names/2026/quarterly-archive/scanned-correspondence"


@pytest.fixture(scope="module")
def failed_index(tmp_path_factory):
    """93 failed documents whose paths are 130+ characters, and one indexed document."""
    uris = [f"{LONG}/batch-{i % 7}/[draft] incoming letter with a rather long name {i:04d}.pdf" for i in range(93)]
    assert min(map(len, uris)) > 90
    docs = [SynthDocSpec(u, error=f"not a readable PDF (corrupt or truncated) {i}") for i, u in enumerate(uris)]
    docs.append(SynthDocSpec("mem://ok.pdf", [SynthPageSpec((400, 300), [((10, 10, 200, 40), "hello world")])]))
    out = tmp_path_factory.mktemp("inspect") / "idx"
    write_index(str(out), docs)
    return str(out), uris


def test_piped_output_names_every_failed_document_whole(failed_index):
    index, uris = failed_index
    out = _inspect(index, env={"COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    missing = [u for u in uris if not any(u in line for line in lines)]  # each path whole, on one line
    assert not missing, f"{len(missing)} of {len(uris)} paths cut, e.g. {missing[0]}"
    assert "…" not in out.stdout
    assert all(f"not a readable PDF (corrupt or truncated) {i}" in out.stdout for i in range(93))


def test_a_terminal_folds_long_paths_instead_of_cutting_them(failed_index):
    import pty

    index, uris = failed_index
    primary, secondary = pty.openpty()
    p = subprocess.Popen([str(SNAPPY), "inspect", index], stdout=secondary, stderr=subprocess.DEVNULL,
                         env={**os.environ, "COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1"})
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert p.wait(timeout=120) == 0
    os.close(primary)
    text = b"".join(chunks).decode()
    assert "…" not in text
    # the uri column, read down: every path is there, folded over several lines
    cells = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│") and "│" in line[1:]]
    column = "".join(cells).replace(" ", "")
    assert all(u.replace(" ", "") in column for u in uris)


def test_what_cannot_be_read_is_named_not_left_empty(failed_index, monkeypatch):
    """An unreadable part of the report says so (JSON `unreported`, a line in the text output) instead
    of printing as "no failed documents"."""
    index, uris = failed_index

    def broken(self, *a, **k):
        raise OSError("connection reset by peer")

    monkeypatch.setattr(IndexStore, "failed_documents", broken)
    res = runner.invoke(app, ["inspect", index, "--json"])
    report = json.loads(res.stdout)
    assert report["failed"] == [] and report["unreported"] == [
        "the failed documents: OSError: connection reset by peer"]
    text = runner.invoke(app, ["inspect", index]).stdout
    assert "not reported: the failed documents: OSError: connection reset by peer" in text
