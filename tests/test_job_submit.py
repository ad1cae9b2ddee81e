"""The entry point unchanged under ``ray job submit`` against a Ray head on loopback (slow).

The head runs in its own process group and its own temp dir, on free ports, bound to 127.0.0.1
(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0); the test stops exactly the processes it started (that
group, then anything still naming its temp dir), never other Ray instances on the machine.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from snappy.storage import IndexStore

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _pids_mentioning(text: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if text.encode() in (d / "cmdline").read_bytes():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


@pytest.fixture()
def ray_head():
    """A Ray head on 127.0.0.1 (own ports, temp dir, process group); yields (dashboard url, env)."""
    if shutil.which("ray", path=str(BIN)) is None:
        pytest.skip("the ray CLI is not installed in this environment")
    temp_dir = tempfile.mkdtemp(prefix="snrj")  # short: Ray's socket paths must stay < 108 chars
    (gcs, dash, client, node_mgr, obj_mgr, agent_listen, agent_grpc, env_agent, metrics,
     wmin) = free_ports(10)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # the job's `python` is this env's
    env.pop("RAY_ADDRESS", None)
    cmd = [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", f"--ray-client-server-port={client}", f"--node-manager-port={node_mgr}",
           f"--object-manager-port={obj_mgr}", f"--dashboard-agent-listen-port={agent_listen}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={env_agent}",
           f"--metrics-export-port={metrics}", f"--min-worker-port={wmin}", f"--max-worker-port={wmin + 200}",
           "--num-cpus=2", "--num-gpus=0", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    log = open(Path(temp_dir) / "head.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # answering (401 without the auth token): it is up
                break
            except Exception:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"Ray head did not come up: {(Path(temp_dir) / 'head.log').read_text()[-3000:]}")
                time.sleep(1)
        yield url, env
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the head and everything it spawned share our new group
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        for pid in _pids_mentioning(temp_dir):  # daemons that left the group still name our temp dir
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit_runs_the_entry_point_unchanged(ray_head, sample_corpus, tmp_path):
    url, env = ray_head
    paths, _, _ = sample_corpus
    source = tmp_path / "src"
    source.mkdir()
    for p in paths[:2]:
        shutil.copy(p, source / p.name)
    (source / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    index = tmp_path / "idx"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", url, "--working-dir", ".", "--",
           "python", "-m", "pipelines.index", "--source", str(source), "--index", str(index),
           "--encoder", "lexical", "--ocr", "none", "--dpi", "72"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    assert "succeeded" in out.lower(), out[-5000:]
    assert "5 pages" in out  # the run summary, printed by the job
    store = IndexStore(index)
    assert store.count_rows()["pages"] == 5
    docs = {r["uri"].rsplit("/", 1)[-1]: r for r in store.documents().to_pylist()}
    assert docs["broken.png"]["status"] == "failed" and "not a readable image" in docs["broken.png"]["error"]
    assert store.snapshot().seq >= 1 and store.snapshot().versions == store.latest_versions()
    from snappy.storage import runlog

    (run,) = runlog.recent(store.files)  # the run log, written by the job on the cluster
    assert run["status"] == "ok" and run["documents"]["indexed"] == 2


@pytest.mark.slow
def test_readme_ray_job_recipe_from_a_plain_shell(sample_corpus, tmp_path):
    """The README's recipe as a newcomer runs it: `bash scripts/ray-job.sh ...` from a shell with no
    environment activated, no RAY_* variables, relative paths; it starts its own head on loopback,
    submits the job, and stops exactly that head."""
    readme = (REPO / "README.md").read_text()
    assert "bash scripts/ray-job.sh --source samples --index .snappy-index" in readme
    paths, _, _ = sample_corpus
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)
    for p in paths[:2]:
        shutil.copy(p, work / "src" / p.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO)))
    before = set(_pids_mentioning("/tmp/snrj."))
    res = subprocess.run(["bash", str(REPO / "scripts" / "ray-job.sh"), "--source", "src", "--index", "idx",
                          "--encoder", "lexical", "--ocr", "none", "--dpi", "72"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    assert "succeeded" in out.lower(), out[-5000:]
    store = IndexStore(str(work / "idx"))  # relative paths resolved against the caller's folder
    assert store.count_rows()["pages"] == 5
    uris = [r["uri"] for r in store.documents().to_pylist()]
    assert len(uris) == 2 and all(str(work / "src") in u for u in uris), uris  # not the job's copy of the folder
    time.sleep(2)
    assert set(_pids_mentioning("/tmp/snrj.")) <= before, "the recipe's Ray head was left running"
