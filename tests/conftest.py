"""Shared fixtures: the generated sample corpus and the anchor data folder."""
from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray binds 127.0.0.1 only

REPO = Path(__file__).resolve().parent.parent
ANCHORS = REPO.parent / "shared" / "anchors"


class Hang(BaseException):
    """Raised by :func:`deadline`; a BaseException so that no ``except Exception`` swallows it."""


@contextmanager
def deadline(seconds: float, what: str = "the block"):
    """Fail (instead of hanging the suite) if the block runs longer than ``seconds`` (main thread)."""
    def _alarm(*_):
        raise Hang(f"{what}: still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray (2 CPUs, 127.0.0.1) for one test module, unless one is running; yields ``ray``."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has ended: it only waits for its parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


@pytest.fixture(scope="session")
def anchors_dir() -> Path:
    if not ANCHORS.is_dir():
        pytest.skip(f"anchor data not found at {ANCHORS} (CI clones the repo with ../shared beside it)")
    return ANCHORS


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory):
    """(pdf paths, facts, docs) of snappy.testing.synth's sample corpus, written once per session."""
    from snappy.testing.synth import sample_corpus as build, write_corpus

    out = tmp_path_factory.mktemp("corpus")
    paths, facts = write_corpus(out)
    docs, _ = build()
    return paths, facts, docs


@pytest.fixture(scope="session")
def ocr_corpus(sample_corpus):
    """The sample corpus rendered at 100 dpi and OCR'd once (rapid engine): {(doc, page): (Page, regions)}."""
    from snappy.ocr import make_ocr
    from snappy.documents.pages import RenderOptions, load_pages

    paths, facts, docs = sample_corpus
    ocr = make_ocr("rapid")
    out = {}
    for path in paths:
        for page in load_pages(path, RenderOptions(dpi=100)):
            out[(path.stem, page.number)] = (page, ocr.recognize(page.image))
    return out


@pytest.fixture()
def s3_endpoint(monkeypatch):
    """A moto S3 server on 127.0.0.1 (a free port) for one test; yields its http:// endpoint."""
    pytest.importorskip("moto")
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        yield endpoint
    finally:
        import urllib.request

        # moto keeps its buckets in process-wide state: reset it so the next test starts empty
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
        server.stop()


@pytest.fixture()
def s3_client(s3_endpoint):
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")
