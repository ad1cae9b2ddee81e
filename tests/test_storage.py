"""IndexStore: Lance round trip, idempotent upserts, replace_docs in one version, s3:// on moto."""
from __future__ import annotations


import numpy as np
import pyarrow as pa
import pytest

from snappy.grid import PatchGrid
from snappy.storage import DOCUMENTS, PAGES, REGIONS, IndexStore, doc_id_for, fs
from snappy.storage.synthetic import SynthDocSpec, SynthPageSpec, write_index

GRID = PatchGrid.uniform("test", (400, 400), 4, 4)  # 16 patches of 100x100 px


def _vectors(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((GRID.n_tokens, 128)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16)


def _docs() -> list[SynthDocSpec]:
    regions = [((10, 10, 190, 90), "alpha beta"), ((210, 110, 390, 190), "gamma"), ((10, 300, 390, 390), "delta")]
    return [
        SynthDocSpec("file:///corpus/a.pdf", [SynthPageSpec((400, 400), regions, _vectors(0), GRID),
                                              SynthPageSpec((400, 400), regions[:2], _vectors(1), GRID)]),
        SynthDocSpec("file:///corpus/b.pdf", [SynthPageSpec((400, 400), regions[1:], _vectors(2), GRID)]),
        SynthDocSpec("file:///corpus/broken.pdf", error="not a readable PDF"),
    ]


def test_round_trip(tmp_path):
    store = write_index(str(tmp_path / "idx"), _docs())
    assert store.versions() == {DOCUMENTS: 1, PAGES: 1, REGIONS: 1}
    assert store.count_rows() == {DOCUMENTS: 3, PAGES: 3, REGIONS: 3 + 2 + 2}
    pages = store.dataset(PAGES).to_table().sort_by("page_id")
    a = doc_id_for("file:///corpus/a.pdf")
    row = pages.filter(pa.compute.equal(pages.column("page_id"), f"{a}-p00001")).to_pylist()[0]
    np.testing.assert_array_equal(np.asarray(row["vectors"], np.float16), _vectors(0))
    assert PatchGrid.from_json(row["grid"]) == GRID and row["n_tokens"] == 16 and row["page_number"] == 1
    failed = store.failed_documents().to_pylist()
    assert [f["uri"] for f in failed] == ["file:///corpus/broken.pdf"] and "readable" in failed[0]["error"]
    # LanceDB opens the same tables by name
    import lancedb

    assert lancedb.connect(store.uri).open_table(PAGES).count_rows() == 3


def test_upsert_is_idempotent_one_version_per_call(tmp_path):
    store = write_index(str(tmp_path / "idx"), _docs())
    regions = store.dataset(REGIONS).to_table()
    before = store.count_rows()
    v = store.upsert(REGIONS, regions)
    assert v == 2 and store.count_rows() == before
    # as a stream of batches too
    v = store.upsert(REGIONS, pa.RecordBatchReader.from_batches(regions.schema, regions.to_batches(max_chunksize=2)))
    assert v == 3 and store.count_rows() == before
    # an update changes the row in place
    changed = regions.set_column(regions.schema.get_field_index("text"), "text",
                                 pa.array(["x"] * regions.num_rows))
    store.upsert(REGIONS, changed)
    assert set(store.dataset(REGIONS).to_table(columns=["text"]).column("text").to_pylist()) == {"x"}
    assert store.count_rows() == before


def test_replace_docs_deletes_stale_rows_in_the_same_version(tmp_path):
    store = write_index(str(tmp_path / "idx"), _docs())
    a, b = doc_id_for("file:///corpus/a.pdf"), doc_id_for("file:///corpus/b.pdf")
    regions = store.dataset(REGIONS).to_table()
    keep = regions.filter(pa.compute.equal(regions.column("region_id"), f"{a}-p00001-r00000"))
    v0 = store.dataset(REGIONS).version
    v = store.upsert(REGIONS, keep, replace_docs=[a])
    assert v == v0 + 1
    left = store.dataset(REGIONS).to_table(columns=["region_id", "doc_id"]).to_pylist()
    assert sorted(r["region_id"] for r in left if r["doc_id"] == a) == [f"{a}-p00001-r00000"]
    assert sum(r["doc_id"] == b for r in left) == 2  # other documents untouched
    # empty data + replace_docs removes the document's rows, still one version
    v = store.upsert(REGIONS, keep.slice(0, 0), replace_docs=[a])
    assert v == v0 + 2 and {r["doc_id"] for r in store.dataset(REGIONS).to_table().to_pylist()} == {b}


def test_delete_documents_and_errors(tmp_path):
    store = write_index(str(tmp_path / "idx"), _docs())
    a = doc_id_for("file:///corpus/a.pdf")
    versions = store.delete_documents([a])
    assert versions == {DOCUMENTS: 2, PAGES: 2, REGIONS: 2}
    assert store.count_rows() == {DOCUMENTS: 2, PAGES: 1, REGIONS: 2}
    with pytest.raises(ValueError, match="duplicate region_id"):
        regions = store.dataset(REGIONS).to_table()
        store.upsert(REGIONS, pa.concat_tables([regions, regions]))
    with pytest.raises(ValueError, match="missing"):
        store.upsert(REGIONS, store.dataset(REGIONS).to_table().drop_columns(["text"]))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        IndexStore(str(tmp_path / "nothing")).dataset(PAGES)
    assert IndexStore(str(tmp_path / "nothing")).versions() == {}
    assert IndexStore(str(tmp_path / "nothing")).documents().num_rows == 0


def test_fs_layer_local(tmp_path):
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "a.pdf").write_bytes(b"%PDF-1")
    (tmp_path / "src" / "sub" / "b.PNG").write_bytes(b"png")
    (tmp_path / "src" / "notes.txt").write_text("x")
    (tmp_path / "src" / ".hidden.pdf").write_bytes(b"x")
    files = fs.list_files(str(tmp_path / "src"), {".pdf", ".png"})
    assert [fs.basename(f.uri) for f in files] == ["a.pdf", "b.PNG"] and files[0].size == 6
    assert fs.read_bytes(files[0].uri) == b"%PDF-1"
    assert fs.join("s3://bkt/pre/", "pages.lance") == "s3://bkt/pre/pages.lance"
    assert fs.join(str(tmp_path), "pages.lance") == str(tmp_path / "pages.lance")
    assert fs.lance_options(str(tmp_path)) is None
    opts = fs.lance_options("s3://b/p", {"aws_endpoint": "http://127.0.0.1:9"}, env={"AWS_REGION": "eu-west-1"})
    assert opts == {"aws_endpoint": "http://127.0.0.1:9", "aws_region": "eu-west-1", "allow_http": "true"}
    with pytest.raises(ValueError, match="unsupported URI scheme"):
        fs.is_remote("gs://bucket/x")
    with pytest.raises(FileNotFoundError):
        fs.list_files(str(tmp_path / "missing"))


# ---------------------------------------------------------------------------- s3:// on moto


@pytest.fixture()
def s3_server(s3_endpoint, s3_client):
    """Bucket ``snappy`` on the test's moto server; yields Lance storage options."""
    s3_client.create_bucket(Bucket="snappy")
    return {"aws_access_key_id": "test", "aws_secret_access_key": "test", "aws_region": "us-east-1",
            "aws_endpoint": s3_endpoint}


def test_s3_store_round_trip(s3_server):
    uri = "s3://snappy/indexes/one"
    store = write_index(uri, _docs(), storage_options=s3_server)
    assert store.storage_options["allow_http"] == "true"
    assert store.versions() == {DOCUMENTS: 1, PAGES: 1, REGIONS: 1}
    regions = store.dataset(REGIONS).to_table()
    a = doc_id_for("file:///corpus/a.pdf")
    assert store.upsert(REGIONS, regions.slice(0, 1), replace_docs=[a]) == 2
    assert store.count_rows()[REGIONS] == 1 + 2
    assert store.table_uri(PAGES) == "s3://snappy/indexes/one/pages.lance"
    # the pyarrow side of the same layer sees the same objects
    fs.write_bytes("s3://snappy/src/x.pdf", b"%PDF-x", s3_server)
    files = fs.list_files("s3://snappy/src", {".pdf"}, s3_server)
    assert [(f.uri, f.size) for f in files] == [("s3://snappy/src/x.pdf", 6)]
    assert fs.read_bytes(files[0].uri, s3_server) == b"%PDF-x"
    assert fs.exists("s3://snappy/indexes/one/pages.lance/_versions", s3_server)
    # and the Searcher reads it
    from snappy.search import Searcher

    s = Searcher(uri, encoder="lexical", storage_options=s3_server)
    assert s.matrix.n_pages == 3
