"""snappy.documents.sources: listing local folders and S3 prefixes, bounded non-blocking reads."""
from __future__ import annotations

import hashlib
import os
import pickle
import time
from pathlib import Path

import pytest
from conftest import deadline

from snappy.errors import DocumentError
from snappy.documents.pages import RenderOptions, iter_pages
from snappy.errors import SourceReadError
from snappy.documents.sources import DocumentBytes, ReadLimits, Source, SourceEntry
from snappy.ids import doc_id_for
from snappy.testing.synth import minimal_pdf

CREDS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "aws_region": "us-east-1"}


# ---------------------------------------------------------------------- local listing
def test_local_source_lists_documents_with_metadata(tmp_path):
    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4 x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "B.PNG").write_bytes(b"png")
    (tmp_path / "notes.txt").write_text("not a document")
    (tmp_path / ".hidden.pdf").write_bytes(b"%PDF")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "c.pdf").write_bytes(b"%PDF")
    src = Source(tmp_path)
    docs = src.list()
    assert [Path(d.uri).relative_to(tmp_path).as_posix() for d in docs] == ["a.pdf", "sub/B.PNG"]
    assert docs[0].size == 10 and docs[0].mtime is not None and docs[0].etag is None
    st = os.stat(tmp_path / "a.pdf")
    assert docs[0].mtime_ns == st.st_mtime_ns and docs[0].mtime == pytest.approx(st.st_mtime)
    assert docs[0].fingerprint == (10, None, st.st_mtime_ns) and docs[0].problem is None and docs[0].raw_path is None
    assert docs[0].doc_id == doc_id_for(docs[0].uri)
    assert docs[0].to_dict()["uri"] == docs[0].uri and docs[0].to_dict()["mtime"] == docs[0].mtime
    assert isinstance(docs[0], SourceEntry)
    assert src.read(docs[0].uri) == b"%PDF-1.4 x"
    assert src.list(limit=1) == docs[:1]
    with pytest.raises(FileNotFoundError, match="gone.pdf"):
        src.read(str(tmp_path / "gone.pdf"))
    with pytest.raises(FileNotFoundError):
        Source(tmp_path / "missing").list()


def test_listing_is_streamed_and_deterministic(tmp_path):
    names = ["b/2.pdf", "a.pdf", "b/1.png", "c.tiff", "b/a/x.jpg", "B.pdf"]
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"x" * len(n))
    src = Source(tmp_path)
    it = src.iter_entries()
    assert iter(it) is it  # a generator, not a list
    first = [e.uri for e in it]
    assert first == [e.uri for e in src.iter_entries()]  # same order every time
    rel = [Path(u).relative_to(tmp_path).as_posix() for u in first]
    assert rel == ["B.pdf", "a.pdf", "c.tiff", "b/1.png", "b/2.pdf", "b/a/x.jpg"]  # files, then sorted folders
    assert [len(c) for c in src.iter_chunks(4)] == [4, 2]
    assert [e.uri for c in src.iter_chunks(4) for e in c] == first
    single = Source(tmp_path / "a.pdf").list()
    assert [e.uri for e in single] == [str(tmp_path / "a.pdf")] and single[0].size == 5


def test_hidden_names_below_the_root_are_skipped_without_a_row(tmp_path):
    from conftest import REPO

    for n in ["a.pdf", ".hidden.pdf", "._a.pdf", ".Trash/b.pdf", "sub/.c.png", "sub/.cache/d.pdf", "sub/e.png"]:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"%PDF")

    def rel(src):
        return [Path(e.uri).relative_to(tmp_path).as_posix() for e in src.list()]

    assert rel(Source(tmp_path)) == ["a.pdf", "sub/e.png"]
    # hidden means below the root: a root inside a hidden folder, or one naming a hidden file, is read
    assert rel(Source(tmp_path / ".Trash")) == [".Trash/b.pdf"]
    assert rel(Source(tmp_path / ".hidden.pdf")) == [".hidden.pdf"]
    for doc in ("README.md", "docs/pipeline.md"):  # the rule is stated where users look
        assert "hidden files and folders" in (REPO / doc).read_text().lower(), doc


def test_non_utf8_name(tmp_path):
    raw_dir = os.fsencode(tmp_path)
    raw = raw_dir + b"/latin1-\xe9t\xe9.pdf"
    pdf = minimal_pdf([(200, 100)])
    with open(raw, "wb") as f:
        f.write(pdf)
    src = Source(tmp_path)
    (e,) = src.list()
    assert e.uri == str(tmp_path) + "/latin1-\\xe9t\\xe9.pdf"
    assert e.uri.encode("utf-8")  # valid UTF-8, displayable and storable
    assert e.raw_path == raw and e.problem is None and e.size == len(pdf)
    assert e.doc_id == doc_id_for(raw) == doc_id_for(os.fsdecode(raw))  # the file system's bytes
    assert e.doc_id != doc_id_for(e.uri)
    assert [x.doc_id for x in src.list()] == [e.doc_id]  # stable across listings
    with src.open_document(e.uri, e.raw_path) as doc:
        assert doc.data == pdf and doc.uri == e.uri
        pages = list(iter_pages(doc.content, source=doc.uri))
    assert len(pages) == 1 and pages[0].source == e.uri
    # given the path itself (a surrogate-escaped str), errors name the file in its display form
    bad = raw_dir + b"/\xff-corrupt.pdf"
    with open(bad, "wb") as f:
        f.write(b"%PDF-1.4\n" + bytes(100))
    with pytest.raises(DocumentError) as err:
        list(iter_pages(os.fsdecode(bad)))
    assert err.value.source == str(tmp_path) + "/\\xff-corrupt.pdf"
    assert err.value.reason == "not a readable PDF (corrupt or truncated)"


# ---------------------------------------------------------------------- odd entries, never blocking
def test_fifo_is_listed_as_a_problem_and_never_blocks(tmp_path):
    fifo = tmp_path / "pipe.pdf"
    os.mkfifo(fifo)
    src = Source(tmp_path)
    with deadline(10):
        (e,) = src.list()
        assert (e.uri, e.problem, e.size) == (str(fifo), "not a regular file (FIFO)", None)
        # opened anyway (a listing that missed it, or a FIFO that replaced a file): prompt DocumentError
        t0 = time.monotonic()
        with pytest.raises(DocumentError, match="not a regular file \\(FIFO\\)") as err:
            with src.open_document(str(fifo)):
                pass
        assert err.value.reason == "not a regular file (FIFO)"
        with pytest.raises(DocumentError, match="FIFO"):
            src.read(str(fifo))
        with pytest.raises(DocumentError, match="FIFO"):
            list(iter_pages(fifo))
        assert time.monotonic() - t0 < 2


def test_symlinks_and_directories(tmp_path):
    (tmp_path / "real.pdf").write_bytes(minimal_pdf([(100, 100)]))
    os.symlink("real.pdf", tmp_path / "good-link.pdf")
    os.symlink("missing.pdf", tmp_path / "dangling.pdf")
    os.symlink("loop.pdf", tmp_path / "loop.pdf")
    (tmp_path / "folder.pdf").mkdir()
    (tmp_path / "folder.pdf" / "inner.png").write_bytes(b"png")
    (tmp_path / "plain-dir").mkdir()
    os.symlink("plain-dir", tmp_path / "dir-link.tiff")
    os.symlink("/dev/null", tmp_path / "null.pdf")
    src = Source(tmp_path)
    got = {Path(e.uri).relative_to(tmp_path).as_posix(): e for e in src.list()}
    assert {k: e.problem for k, e in got.items()} == {
        "real.pdf": None, "good-link.pdf": None,
        "dangling.pdf": "broken symbolic link (target missing)",
        "loop.pdf": "symbolic link loop",
        "folder.pdf": "is a directory, not a document",
        "folder.pdf/inner.png": None,  # walked into
        "dir-link.tiff": "is a directory, not a document",
        "null.pdf": "not a regular file (character device)",
    }
    assert got["good-link.pdf"].size == got["real.pdf"].size
    # opening them directly gives the same reasons, as DocumentErrors (the entries' own fault)
    for name in ("dangling.pdf", "loop.pdf", "folder.pdf", "null.pdf"):
        with pytest.raises(DocumentError) as err:
            with src.open_document(str(tmp_path / name)):
                pass
        assert err.value.reason == got[name].problem, name


def test_vanished_file_is_a_source_read_error(tmp_path):
    src = Source(tmp_path)
    with pytest.raises(SourceReadError) as err:
        with src.open_document(str(tmp_path / "gone.pdf")):
            pass
    assert isinstance(err.value, OSError) and "gone.pdf" in str(err.value)
    assert err.value.reason == "file not found (deleted or moved since listing?)"


def test_max_bytes_reads_nothing(tmp_path, monkeypatch):
    big = tmp_path / "big.pdf"
    with open(big, "wb") as f:
        f.write(b"%PDF-1.4\n")
        f.truncate(3 << 29)  # 1.5 GB, sparse
    assert os.stat(big).st_blocks * 512 < 1 << 20  # no disk used
    read = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: read.append(n) or real_read(fd, n))
    src = Source(tmp_path)
    (e,) = src.list()
    assert e.size == 3 << 29 and e.problem is None
    with pytest.raises(DocumentError) as err:
        with src.open_document(e.uri):
            pass
    assert err.value.reason == "1.6 GB file, over max_bytes=1.1 GB" and read == []
    with pytest.raises(DocumentError, match="over max_bytes=1.0 kB"):
        with src.open_document(e.uri, limits=ReadLimits(max_bytes=1024)):
            pass
    assert read == []


def test_max_in_memory_hands_over_the_path(tmp_path):
    small, large = tmp_path / "small.pdf", tmp_path / "large.pdf"
    small.write_bytes(minimal_pdf([(100, 100)]))
    large.write_bytes(minimal_pdf([(100, 100)], pad=3 << 20))
    src = Source(tmp_path)
    limits = ReadLimits(max_in_memory=1 << 20)
    with src.open_document(str(small), limits=limits) as doc:
        assert isinstance(doc, DocumentBytes) and doc.data == small.read_bytes() and doc.path is None
        assert doc.sha256 == hashlib.sha256(doc.data).hexdigest() and doc.size == len(doc.data)
    with src.open_document(str(large), limits=limits) as doc:
        assert doc.data is None and doc.path == str(large) and doc.size == large.stat().st_size
        assert doc.sha256 == hashlib.sha256(large.read_bytes()).hexdigest()
        assert len(list(doc.iter_pages())) == 1


def test_pages_from_a_path_are_not_read_into_memory(tmp_path):
    import tracemalloc

    from PIL import Image

    pdf = tmp_path / "padded.pdf"
    pdf.write_bytes(minimal_pdf([(200, 200)], pad=20 << 20))
    bmp = tmp_path / "raw.bmp"
    Image.new("RGB", (2500, 2500), "white").save(bmp)  # 18.75 MB uncompressed
    for path, size in ((pdf, (278, 278)), (bmp, (2500, 2500))):
        tracemalloc.start()
        try:
            pages = [p.size for p in iter_pages(path, RenderOptions(dpi=100))]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert pages == [size]
        assert peak < 4 << 20, (path.name, peak)  # the old code read the whole ~20 MB file as bytes


# ---------------------------------------------------------------------- S3
def test_s3_source_lists_and_reads_through_a_local_endpoint(s3_endpoint, s3_client):
    creds = {**CREDS, "aws_endpoint": s3_endpoint}
    s3_client.create_bucket(Bucket="docs")
    for key, body in [("corpus/a.pdf", b"%PDF-a"), ("corpus/sub/b.png", b"png"), ("corpus/x.txt", b"t"),
                      ("corpus-other/c.pdf", b"%PDF-c"), ("corpus/.hid/d.pdf", b"%PDF-d"),
                      ("corpus/folder.pdf/", b""), ("corpus/plain/", b"")]:
        s3_client.put_object(Bucket="docs", Key=key, Body=body)
    src = Source("s3://docs/corpus", creds)
    docs = src.list()
    assert [(d.uri, d.problem) for d in docs] == [
        ("s3://docs/corpus/a.pdf", None), ("s3://docs/corpus/folder.pdf/", "is a folder marker, not a document"),
        ("s3://docs/corpus/sub/b.png", None)]
    head = s3_client.head_object(Bucket="docs", Key="corpus/a.pdf")
    a = docs[0]
    assert a.size == 6 and a.etag == head["ETag"].strip('"') and a.mtime
    assert a.mtime_ns == int(head["LastModified"].timestamp()) * 10**9 and a.fingerprint == (6, a.etag, a.mtime_ns)
    assert a.doc_id == doc_id_for("s3://docs/corpus/a.pdf") and a.raw_path is None
    clone = pickle.loads(pickle.dumps(src))  # shipped to Ray workers: the client is rebuilt there
    assert clone.read("s3://docs/corpus/a.pdf") == b"%PDF-a"
    with pytest.raises(FileNotFoundError, match="missing.pdf"):
        clone.read("s3://docs/corpus/missing.pdf")
    with clone.open_document("s3://docs/corpus/a.pdf") as doc:
        assert doc.data == b"%PDF-a" and doc.sha256 == hashlib.sha256(b"%PDF-a").hexdigest()
    with pytest.raises(SourceReadError) as err:
        with clone.open_document("s3://docs/corpus/missing.pdf"):
            pass
    assert err.value.reason == "no such object (deleted since listing?)" and "missing.pdf" in str(err.value)
    with pytest.raises(DocumentError, match="folder marker"):
        with clone.open_document("s3://docs/corpus/folder.pdf/"):
            pass


def test_s3_hidden_keys_below_the_prefix_are_skipped(s3_endpoint, s3_client):
    creds = {**CREDS, "aws_endpoint": s3_endpoint}
    s3_client.create_bucket(Bucket="docs")
    for key in ["c/a.pdf", "c/.b.pdf", "c/._a.pdf", "c/.Trash/d.pdf", "c/sub/.e.pdf", "c/sub/f.png", ".arch/g.pdf"]:
        s3_client.put_object(Bucket="docs", Key=key, Body=b"%PDF")
    assert [e.uri for e in Source("s3://docs/c", creds).list()] == ["s3://docs/c/a.pdf", "s3://docs/c/sub/f.png"]
    assert [e.uri for e in Source("s3://docs/.arch", creds).list()] == ["s3://docs/.arch/g.pdf"]
    assert [e.uri for e in Source("s3://docs/c/.b.pdf", creds).list()] == ["s3://docs/c/.b.pdf"]  # as locally


def test_s3_large_objects_stream_to_a_temp_file(s3_endpoint, s3_client):
    s3_client.create_bucket(Bucket="lake")
    body = minimal_pdf([(150, 100)], pad=3 << 20)
    s3_client.put_object(Bucket="lake", Key="big/doc.pdf", Body=body)
    src = Source("s3://lake/big", {**CREDS, "aws_endpoint": s3_endpoint})
    (e,) = src.list()
    with src.open_document(e.uri, limits=ReadLimits(max_in_memory=1 << 20)) as doc:
        assert doc.data is None and os.path.isfile(doc.path) and doc.path.endswith(".pdf")
        assert os.path.getsize(doc.path) == len(body) == doc.size
        assert doc.sha256 == hashlib.sha256(body).hexdigest()
        assert [p.size for p in doc.iter_pages()] == [(313, 209)]
        tmp = doc.path
    assert not os.path.exists(tmp)  # removed on exit
    with pytest.raises(DocumentError) as err:
        with src.open_document(e.uri, limits=ReadLimits(max_bytes=1 << 20)):
            pass
    assert err.value.reason == "3.1 MB file, over max_bytes=1.0 MB"


def test_s3_unreachable_fails_fast_with_source_read_error():
    src = Source("s3://nowhere/docs", {**CREDS, "aws_endpoint": "http://127.0.0.1:1"})
    t0 = time.monotonic()
    with deadline(20):
        with pytest.raises(SourceReadError) as err:
            with src.open_document("s3://nowhere/docs/a.pdf", limits=ReadLimits(timeout_s=1, attempts=1)):
                pass
    assert time.monotonic() - t0 < 5
    assert err.value.reason == "cannot connect to the S3 endpoint" and "a.pdf" in str(err.value)


def test_unreadable_folders_and_files_are_listed_with_their_problem(tmp_path, monkeypatch):
    """Permission errors (simulated: the tests run as root) leave a trace instead of a silent skip."""
    (tmp_path / "ok.pdf").write_bytes(b"%PDF")
    (tmp_path / "secret.pdf").write_bytes(b"%PDF")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "x.pdf").write_bytes(b"%PDF")
    real_scandir, real_lstat = os.scandir, os.lstat

    def scandir(path):
        if os.fsencode(path).endswith(b"/locked"):
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    def lstat(path, *a, **k):
        if os.fsencode(path).endswith(b"/secret.pdf"):
            raise PermissionError(13, "Permission denied", path)
        return real_lstat(path, *a, **k)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "lstat", lstat)
    got = {Path(e.uri).relative_to(tmp_path).as_posix(): e.problem for e in Source(tmp_path).iter_entries()}
    assert got == {"ok.pdf": None, "secret.pdf": "cannot stat (Permission denied)",
                   "locked": "cannot list folder (Permission denied)"}
