"""One Ray start-up for every entry point: loopback by default, stopped with the run, even a killed one.

The CLI tests run the installed ``snappy`` command as a user would: no RAY_* variable exported
(conftest exports RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER for the in-process tests; these remove it),
and look at every TCP listener of the command's process tree while it runs. Every process is
stopped by PID; nothing listens beyond 127.0.0.1.
"""
from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import alive

from pipelines import reaper
from pipelines.cluster import RayOptions, cluster_address
from pipelines.config import IndexConfig
from pipelines.index import EncoderInfo, settings_warnings
from snappy.testing.synth import write_page_corpus

REPO = Path(__file__).resolve().parent.parent
SNAPPY = Path(sys.executable).with_name("snappy")
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


# ---------------------------------------------------------------------- decisions (no Ray)
def test_cluster_address_prefers_the_option_then_the_environment(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address(RayOptions()) is None  # a local Ray
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    assert cluster_address(RayOptions()) == "http://127.0.0.1:8265"  # inside `ray job submit`
    assert cluster_address(RayOptions(address="ray://10.0.0.1:10001")) == "ray://10.0.0.1:10001"


def test_write_batches_never_wait_for_more_than_one_round_of_a_pool():
    c = IndexConfig("s", "i")
    assert c.write_batch_rows(use_ocr=False, embed_actors=False) is None  # fused into the read task
    assert c.write_batch_rows(use_ocr=True, embed_actors=False) == c.ocr_actors * c.ocr_batch_size == 4
    assert c.write_batch_rows(use_ocr=True, embed_actors=True) == c.embed_actors * c.embed_batch_size == 8
    big = IndexConfig("s", "i", ocr_actors=64)
    assert big.write_batch_rows(use_ocr=True, embed_actors=False) == big.write_rows == 64


def test_settings_that_can_never_match_are_named():
    lexical = EncoderInfo("lexical:v2", 128, needs_pixels=False, loads_model=False, needs_regions=True)
    model = EncoderInfo("colqwen2.5", 128, needs_pixels=True, loads_model=True, needs_regions=False)
    (w,) = settings_warnings(IndexConfig("s", "i", ocr="none", text_layer="off"), lexical)
    assert "no query will match" in w and "--ocr none" in w
    (w,) = settings_warnings(IndexConfig("s", "i", ocr="none"), lexical)  # the text layer still reads PDFs
    assert "without a usable text layer (scans, images) get no regions" in w
    assert settings_warnings(IndexConfig("s", "i", ocr="rapid"), lexical) == []
    assert settings_warnings(IndexConfig("s", "i", ocr="none", text_layer="off"), model) == []
    null = EncoderInfo("null:d128", 128, needs_pixels=False, loads_model=False)
    assert settings_warnings(IndexConfig("s", "i", ocr="none"), null)


# ---------------------------------------------------------------------- the reaper (no Ray)
def test_reaper_stops_only_the_ray_processes_of_a_dead_parent(tmp_path):
    """A parent starts a fake Ray daemon (cmdline under .../ray/) and a non-Ray child, then dies by SIGKILL:
    the reaper stops the first, by PID, and leaves the second alone."""
    fake = tmp_path / "ray" / "raylet.py"
    fake.parent.mkdir()
    fake.write_text("import time\nwhile True: time.sleep(1)\n")
    other = tmp_path / "other.py"
    other.write_text("import time\nwhile True: time.sleep(1)\n")
    parent_code = (f"import subprocess, sys, time\n"
                   f"a = subprocess.Popen([sys.executable, {str(fake)!r}], start_new_session=True)\n"
                   f"b = subprocess.Popen([sys.executable, {str(other)!r}], start_new_session=True)\n"
                   f"subprocess.Popen([sys.executable, {str(Path(reaper.__file__))!r}, str(__import__('os').getpid())],"
                   f" start_new_session=True)\n"
                   f"print(a.pid, b.pid, flush=True)\n"
                   f"time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    ray_pid, other_pid = map(int, parent.stdout.readline().split())
    try:
        time.sleep(1.5)  # the reaper has recorded its parent's tree
        parent.kill()
        parent.wait(timeout=10)
        _wait(lambda: not alive(ray_pid), 20, "the reaper to stop the Ray-like daemon")
        assert alive(other_pid), "the reaper stopped a process that is not Ray's"
    finally:
        for pid in (ray_pid, other_pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ---------------------------------------------------------------------- the real CLI
def _user_env() -> dict:
    """The environment of a user's shell: none of the RAY_* variables the test suite exports."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONPATH"}


def test_snappy_index_listens_on_loopback_only(tmp_path):
    """`snappy index` with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER unset: every TCP listener of its process tree,
    sampled through the whole run, is on 127.0.0.1 (before the fix: 16 of 17 on * or the external address)."""
    if not SNAPPY.exists():
        pytest.skip(f"the snappy console script is not installed next to {sys.executable}")
    write_page_corpus(tmp_path / "src", pages=3, pages_per_doc=1)
    proc = subprocess.Popen([str(SNAPPY), "index", str(tmp_path / "src"), "--index", str(tmp_path / "idx"),
                             "--ocr", "none"], cwd=tmp_path, env=_user_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen: set[tuple[int, str, int]] = set()
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= listeners(proc.pid)
            time.sleep(0.2)
        out = proc.communicate(timeout=60)[0]
    finally:
        _kill_group(proc)
    assert proc.returncode == 0, out[-3000:]
    assert "3 pages" in out, out[-3000:]
    assert "3 text layer" in out, out[-3000:]  # generated PDFs: their text layer, no OCR needed
    assert "--ocr none: pages without a usable" in out  # what --ocr none costs: said at index time
    assert len({p for p, _, _ in seen}) >= 3, f"too few Ray processes seen listening: {seen}"
    exposed = sorted((pid, ip, port) for pid, ip, port in seen if ip not in LOOPBACK)
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_a_killed_run_leaves_no_ray_behind(tmp_path):
    """SIGKILL of `snappy index` alone (not its group) while its local Ray runs: every Ray process it
    started is gone within 30 s (before: the dashboard and runtime-env agents outlived it)."""
    if not SNAPPY.exists():
        pytest.skip(f"the snappy console script is not installed next to {sys.executable}")
    write_page_corpus(tmp_path / "src", pages=40, pages_per_doc=2)
    proc = subprocess.Popen([str(SNAPPY), "index", str(tmp_path / "src"), "--index", str(tmp_path / "idx"),
                             "--ocr", "none"], cwd=tmp_path, env=_user_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        family = _wait(lambda: (lambda f: f if any(c.startswith(b"ray::MapBatches") for c in f.values()) else None)(
            _ray_family(proc.pid)), 120, "the run's pipeline to start")
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: its Ray processes are not signalled
        proc.wait(timeout=30)
        _wait(lambda: not [p for p in family if alive(p)], 30,
              "the killed run's Ray processes to stop: " + ", ".join(
                  f"{p} {family[p][:60]!r}" for p in family if alive(p)))
    finally:
        _kill_group(proc)


# ---------------------------------------------------------------------- helpers
def _wait(predicate, timeout: float, what: str):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        v = predicate()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _ray_family(root: int) -> dict[int, bytes]:
    return {p: Path(f"/proc/{p}/cmdline").read_bytes() for p in reaper.descendants(root) if alive(p)}


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop what this test started, by PID: the command's own group and the Ray processes under it."""
    family = _ray_family(proc.pid) if proc.poll() is None else {}
    for pid in [proc.pid, *family]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def _tree(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_bytes().rsplit(b")", 1)[1].split()[1])
            except OSError:
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _listening_sockets() -> dict[int, tuple[str, int]]:
    """{socket inode: (ip, port)} of every TCP socket in LISTEN state (from /proc/net/tcp and tcp6)."""
    out = {}
    for family, path in ((socket.AF_INET, "/proc/net/tcp"), (socket.AF_INET6, "/proc/net/tcp6")):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] != "0A":  # TCP_LISTEN
                continue
            addr, port = f[1].split(":")
            raw = bytes.fromhex(addr)
            packed = b"".join(struct.pack("<I", struct.unpack(">I", raw[i:i + 4])[0]) for i in range(0, len(raw), 4))
            out[int(f[9])] = (socket.inet_ntop(family, packed), int(port, 16))
    return out


def listeners(root: int) -> set[tuple[int, str, int]]:
    """(pid, ip, port) of every TCP listener held by ``root`` or a process under it."""
    lis = _listening_sockets()
    found = set()
    for pid in _tree(root):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in lis:
                    found.add((pid, *lis[inode]))
    return found


# ---------------------------------------------------------------------- the service's proxy
def test_body_limit_refuses_any_framing_and_replays_small_bodies():
    """The proxy middleware (no Ray): an endless chunked body is cut at the limit + one chunk, a
    Content-Length over it is refused unread, a small chunked body reaches the app intact."""
    import asyncio

    from pipelines.proxy import BodyLimit

    async def drive(headers, chunks, limit=1000):
        pulled, sent, seen = [0], [], []

        async def receive():
            i = pulled[0]
            pulled[0] += 1
            if chunks is None:  # endless
                return {"type": "http.request", "body": b"x" * 300, "more_body": True}
            return {"type": "http.request", "body": chunks[i], "more_body": i + 1 < len(chunks)}

        async def send(m):
            sent.append(m)

        async def app(scope, rcv, snd):
            body = b""
            while True:
                m = await rcv()
                body += m.get("body", b"")
                if not m.get("more_body"):
                    break
            seen.append(body)
            await snd({"type": "http.response.start", "status": 200, "headers": []})
            await snd({"type": "http.response.body", "body": b"ok"})

        scope = {"type": "http", "method": "POST", "headers": headers}
        await BodyLimit(app, limit)(scope, receive, send)
        return pulled[0], sent[0]["status"], seen

    pulled, status, seen = asyncio.run(drive([], None))
    assert status == 413 and pulled == 4 and not seen  # 4 x 300 > 1000: stopped there
    pulled, status, seen = asyncio.run(drive([(b"content-length", b"5000")], None))
    assert status == 413 and pulled == 0
    pulled, status, seen = asyncio.run(drive([], [b"{\"query\":", b" \"a\"}"]))
    assert status == 200 and seen == [b'{"query": "a"}']


def test_snappy_serve_listens_on_loopback_and_its_proxy_refuses_big_bodies(tmp_path):
    """`snappy serve` as a user runs it (no RAY_* variable): every listener of its tree on 127.0.0.1,
    and a 50 MB chunked POST is refused with 413 without Serve's proxy growing by the body (before:
    +90 MB in the proxy and as much in the router)."""
    import http.client
    import json as _json

    from snappy.testing.synth_index import SynthDocSpec, SynthPageSpec, write_index

    if not SNAPPY.exists():
        pytest.skip(f"the snappy console script is not installed next to {sys.executable}")
    write_index(str(tmp_path / "idx"), [SynthDocSpec("mem://a.pdf", [SynthPageSpec((800, 1000), [
        ((40, 40, 700, 90), "invoice total amount due")])])])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(SNAPPY), "serve", str(tmp_path / "idx"), "--port", str(port)], cwd=tmp_path,
                            env=_user_env(), stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "wb"),
                            start_new_session=True)
    try:
        def healthy():
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/healthz")
                return c.getresponse().status == 200
            except OSError:
                return False
        _wait(healthy, 240, "snappy serve to answer /healthz")
        seen = listeners(proc.pid)
        exposed = sorted(x for x in seen if x[1] not in LOOPBACK)
        assert not exposed, f"listening beyond loopback: {exposed}"
        assert any(p == port for _, _, p in seen)
        proxy_pid = next(p for p, c in _ray_family(proc.pid).items() if c.startswith(b"ray::ProxyActor"))
        before = _rss(proxy_pid)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.putrequest("POST", "/query")
        c.putheader("content-type", "application/json")
        c.putheader("transfer-encoding", "chunked")
        c.endheaders()
        chunk = b"x" * (1 << 20)
        try:
            for _ in range(50):
                c.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            c.send(b"0\r\n\r\n")
        except OSError:
            pass  # the proxy answered and closed: what should happen
        r = c.getresponse()
        assert r.status == 413 and _json.loads(r.read())["field"] == "body"
        grown = _rss(proxy_pid) - before
        assert grown < 20 << 20, f"the proxy grew by {grown >> 20} MB"
        c2 = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c2.request("POST", "/query", body=b'{"query": "invoice total"}', headers={"content-type": "application/json"})
        assert c2.getresponse().status == 200  # small bodies pass the proxy's limit
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        _kill_group(proc)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    return 0
