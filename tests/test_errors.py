"""Errors a user can act on: bad queries, damaged indexes, unreachable S3, credentials kept out of logs."""
from __future__ import annotations

import glob
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from snappy.encoders.lexical import LexicalEncoder, LexicalOptions
from snappy.search import QueryError, Searcher, top_k
from snappy.search.maxsim import PageMatrix, maxsim
from snappy.search.query import check_query, check_request
from snappy.storage import IndexDamaged
from snappy.testing.synth_index import SynthDocSpec, SynthPageSpec, write_index

DOCS = [
    SynthDocSpec("mem://report.pdf", [
        SynthPageSpec((800, 1000), [((50, 50, 750, 100), "Annual report of the company"),
                                    ((50, 400, 750, 440), "Quarterly revenue grew by twelve percent")]),
        SynthPageSpec((800, 1000), [((420, 500, 750, 540), "Total amount due 1234 EUR")]),
    ]),
    SynthDocSpec("mem://letter.pdf", [SynthPageSpec((1000, 700), [((60, 600, 500, 650), "Signature of the director")])]),
]
runner = CliRunner()


@pytest.fixture()
def index_dir(tmp_path):
    write_index(str(tmp_path / "idx"), DOCS)
    return tmp_path / "idx"


# ------------------------------------------------------------------ queries


@pytest.mark.parametrize("text, why", [("", "empty"), ("   \n\t ", "empty"), ("?!.,;-- ***", "no words"),
                                       ("a" * 2001, "over the limit"), (None, "must be a string")])
def test_unsearchable_queries_are_refused_with_a_reason(text, why):
    with pytest.raises(QueryError, match=why):
        check_query(text)


@pytest.mark.parametrize("args, field", [((0, "p50", "iou"), "top_pages"), ((101, "p50", "iou"), "top_pages"),
                                         ((True, "p50", "iou"), "top_pages"), ((5, "p500", "iou"), "threshold"),
                                         ((5, "best", "iou"), "threshold"), ((5, "p50", "sum"), "method")])
def test_bad_request_options_name_the_field(args, field):
    with pytest.raises(QueryError) as e:
        check_request(*args)
    assert e.value.field == field


def test_a_huge_query_is_refused_before_encoding(index_dir):
    class Counting(LexicalEncoder):
        calls = 0

        def embed_queries(self, texts):
            Counting.calls += 1
            return super().embed_queries(texts)

    s = Searcher(str(index_dir), encoder=Counting())
    t0 = time.process_time()
    with pytest.raises(QueryError, match="over the limit"):
        s.query("revenue " * 131072)  # 1 MiB
    assert Counting.calls == 0 and time.process_time() - t0 < 5
    with pytest.raises(QueryError, match="empty"):
        s.query("   ")
    assert s.query("total amount due", top_pages=1)[0].page_number == 2 and Counting.calls == 1


def test_cli_rejects_bad_queries_in_one_line(index_dir):
    for args, msg in ((["   "], "query is empty"), (["..."], "no words"), (["x", "-k", "0"], "top_pages"),
                      (["x", "--threshold", "p500"], "percentile"), (["x", "--method", "sum"], "method")):
        r = runner.invoke(app, ["query", str(index_dir), *args])
        assert r.exit_code == 2 and msg in r.output, (args, r.output)


def test_top_k_and_maxsim_on_bad_values():
    idx = top_k(np.array([[np.nan, np.nan, 1.0], [1.0, 2.0, 3.0]]), 2)
    assert idx.tolist() == [[2, 0], [2, 1]]  # NaN ranks last, never raises
    matrix = PageMatrix(np.eye(4, 8, dtype=np.float32), np.array([0, 2, 4]))
    with pytest.raises(ValueError, match=r"expected \[tokens, 8\]"):
        maxsim([np.ones((2, 4), np.float32)], matrix)  # wrong width: refused, not reshaped
    with pytest.raises(ValueError, match="non-finite"):
        maxsim([np.full((1, 8), np.nan, np.float32)], matrix)


def test_one_nan_query_does_not_fail_its_batch(index_dir):
    s = Searcher(str(index_dir))
    good = s.encode(["total amount due"])[0]
    bad = np.full_like(good, np.nan)
    res = s.search_vectors([good, bad, good[:0]], top_pages=1)
    assert res[0][0].page_number == 2 and res[1] == [] and res[2] == []


def test_mixed_encoders_serve_the_majority(tmp_path):
    uri = str(tmp_path / "idx")
    write_index(uri, DOCS)  # 3 pages, default lexical encoder
    other = LexicalEncoder(LexicalOptions(seed=7))
    write_index(uri, [SynthDocSpec("mem://new.pdf", [SynthPageSpec((800, 1000), [((0, 0, 100, 100), "new")])])],
                encoder=other)
    s = Searcher(uri)
    assert s.n_pages == 3 and s.encoder_id == LexicalEncoder().encoder_id
    assert s.query("total amount due", top_pages=1)[0].uri == "mem://report.pdf"


# ------------------------------------------------------------------ damaged indexes


def _one(pattern: str) -> str:
    (path,) = glob.glob(pattern)
    return path


def _delete(idx):
    path = _one(f"{idx}/pages.lance/data/*.lance")
    os.remove(path)
    return "pages", os.path.basename(path), "data file missing"


def _truncate(idx):
    path = _one(f"{idx}/pages.lance/data/*.lance")
    with open(path, "r+b") as f:
        f.truncate(100)
    return "pages", os.path.basename(path), "truncated"


def _randomise(idx):
    path = _one(f"{idx}/pages.lance/data/*.lance")
    size = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write(np.random.default_rng(0).bytes(size))
    return "pages", os.path.basename(path), "cannot be read"


def _corrupt_manifest(idx):
    path = _one(f"{idx}/pages.lance/_versions/*.manifest")
    with open(path, "r+b") as f:
        f.write(b"garbage" * 10)
    return "pages", os.path.basename(path), "cannot be opened"


def _drop_regions(idx):
    shutil.rmtree(f"{idx}/regions.lance")
    return "regions", "regions.lance", "cannot be opened"


def _corrupt_snapshot(idx):
    path = _one(f"{idx}/_snapshots/*.json")
    with open(path, "wb") as f:
        f.write(b"{not json")
    return "", os.path.basename(path), "not a readable snapshot"


DAMAGE = {"deleted": _delete, "truncated": _truncate, "randomised": _randomise, "manifest": _corrupt_manifest,
          "no-regions": _drop_regions, "snapshot": _corrupt_snapshot}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_index_names_table_file_and_cause(index_dir, damage):
    table, file, cause = DAMAGE[damage](index_dir)
    # a fresh process: nothing cached from writing the index
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "query", str(index_dir), "total amount due", "--json"],
                       capture_output=True, text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)),
                       env={**os.environ, "COLUMNS": "400", "RUST_BACKTRACE": "0"})
    assert r.returncode == 3, r.stdout + r.stderr
    assert r.stdout == ""  # never pages without regions, never a partial answer
    lines = [ln for ln in r.stderr.splitlines() if "damaged index" in ln]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    line = lines[0]
    assert file in line and cause in line and (not table or f"{table}:" in line), line
    assert f"snappy inspect {index_dir}" in line


def test_damage_raises_index_damaged_in_the_library(index_dir):
    _delete(index_dir)
    with pytest.raises(IndexDamaged, match="data file missing"):
        Searcher(str(index_dir))


def test_an_unreachable_s3_endpoint_says_so(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEY123456")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-value")
    with socket_port() as port:  # a port nothing listens on
        r = runner.invoke(app, ["query", "s3://lake/idx", "total", "--s3-endpoint", f"http://127.0.0.1:{port}",
                                "--s3-region", "us-east-1"])
    assert r.exit_code == 2 and "cannot reach the index location" in r.output, r.output
    assert "no index here" not in r.output and "AKIAEXAMPLEKEY123456" not in r.output


class socket_port:
    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc) -> None:
        return None


# ------------------------------------------------------------------ credentials


KEY_ID, SECRET = "AKIAKNOWNKEYID123456", "Known/Secret+Value123"


def _assert_clean(text: str) -> None:
    for bad in (KEY_ID, SECRET, "Credential=AKIA"):
        assert bad not in text, f"{bad!r} leaked:\n" + "\n".join(ln for ln in text.splitlines() if bad in ln)[:2000]
    # a value that is not the mask, b'***' or '***' (a bare b*** is a leaked first character)
    leaked = re.findall(r"(?i)signature['\"]?\s*[=:]\s*(?!b?['\"]\*\*\*|\*\*\*)b?['\"]?\w+", text)
    assert not leaked, f"signatures leaked: {leaked[:3]}"


def test_redaction_masks_whole_values_whatever_their_first_character():
    """A hex signature that starts with "b" is masked whole (the "b" of a bytes repr, b'...', is kept
    only before a quote): botocore logs ``Signature:\n<hex>``, and 1 in 16 begin with "b"."""
    from snappy.logs import redact

    for text, want in [("Signature:\nbd3f00aa", "Signature:\n***"), ("Signature:\n9b8c", "Signature:\n***"),
                       ("'Signature': b'abc'", "'Signature': b'***'"), ("X-Amz-Signature=b0c1&x=1", "X-Amz-Signature=***&x=1"),
                       ("AWSAccessKeyId=bKEY&Signature=bXYZ", "AWSAccessKeyId=***&Signature=***"),
                       ("x-amz-security-token: b'tok'", "x-amz-security-token: b'***'")]:
        assert redact(text) == want, (text, redact(text))
        _assert_clean(redact(text))


def test_botocore_debug_records_are_redacted(s3_endpoint):
    """Even with botocore forced to DEBUG, what reaches a handler has no credential material."""
    import boto3

    from snappy import logs

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    try:
        logs.install([handler], verbose=True)
        logging.getLogger("botocore").setLevel(logging.DEBUG)  # as a user might, by hand
        root.setLevel(logging.DEBUG)
        s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID,
                          aws_secret_access_key=SECRET)
        s3.create_bucket(Bucket="lake")
        s3.put_object(Bucket="lake", Key="k", Body=b"x")
        s3.generate_presigned_url("get_object", Params={"Bucket": "lake", "Key": "k"})
        logging.getLogger("test").debug("a url %s", s3.generate_presigned_url("get_object",
                                                                              Params={"Bucket": "lake", "Key": "k"}))
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
        logging.getLogger("botocore").setLevel(logging.WARNING)
    text = stream.getvalue()
    # the records were there, masked: the signed headers, the signature, the presigned URL
    assert "'Authorization': b'***'" in text and "Signature:\n***" in text and "AWSAccessKeyId=***" in text
    _assert_clean(text)


def test_verbose_cli_on_s3_logs_no_credentials(s3_endpoint, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID,
                 aws_secret_access_key=SECRET).create_bucket(Bucket="lake")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": s3_endpoint, "AWS_ALLOW_HTTP": "true", "COLUMNS": "300"}
    from snappy.storage.fs import S3Settings

    write_index("s3://lake/idx", DOCS, storage_options=S3Settings(endpoint=s3_endpoint, region="us-east-1"))
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "-v", "query", "s3://lake/idx", "total amount due",
                        "--s3-endpoint", s3_endpoint, "--json"], capture_output=True, text=True, timeout=120, env=env,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "DEBUG" in r.stderr or "snappy" in r.stderr  # it did log
    _assert_clean(r.stdout + r.stderr)
