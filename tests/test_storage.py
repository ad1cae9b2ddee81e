"""IndexStore: Lance round trip, whole-document upserts, published snapshots, housekeeping, s3:// on moto."""
from __future__ import annotations


import numpy as np
import pyarrow as pa
import pytest

from snappy.patches.grid import PatchGrid
from snappy.ids import doc_id_for
from snappy.storage import DOCUMENTS, PAGES, REGIONS, IndexStore, fs
from snappy.testing.synth_index import SynthDocSpec, SynthPageSpec, write_index

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
    snap = store.snapshot()
    assert snap.seq == 1 and set(snap.versions) == {DOCUMENTS, PAGES, REGIONS}
    assert store.count_rows() == {DOCUMENTS: 3, PAGES: 3, REGIONS: 3 + 2 + 2}
    pages = store.read(PAGES).sort_by("page_id")
    a = doc_id_for("file:///corpus/a.pdf")
    row = pages.filter(pa.compute.equal(pages.column("page_id"), f"{a}-p00001")).to_pylist()[0]
    np.testing.assert_array_equal(np.asarray(row["vectors"], np.float16), _vectors(0))
    assert PatchGrid.from_json(row["grid"]) == GRID and row["n_tokens"] == 16 and row["page_number"] == 1
    docs = {r["doc_id"]: r for r in store.documents().to_pylist()}
    assert row["gen"] == docs[a]["gen"] > 0  # the page is the generation its document confirms
    failed = store.failed_documents().to_pylist()
    assert [f["uri"] for f in failed] == ["file:///corpus/broken.pdf"] and "readable" in failed[0]["error"]
    assert failed[0]["status"] == "failed" and failed[0]["failure"] == "document"
    # LanceDB opens the same tables by name
    import lancedb

    assert lancedb.connect(store.uri).open_table(PAGES).count_rows() == 3


def _rows(store, name):
    return store.read(name).to_pylist()


def test_upsert_replaces_whole_documents_and_is_idempotent(tmp_path):
    store = write_index(str(tmp_path / "idx"), _docs())
    a, b = doc_id_for("file:///corpus/a.pdf"), doc_id_for("file:///corpus/b.pdf")
    docs = store.documents().to_pylist()
    pages, regions = _rows(store, PAGES), _rows(store, REGIONS)
    before = store.count_rows()
    doc_a = [d for d in docs if d["doc_id"] == a]
    pages_a = [p for p in pages if p["doc_id"] == a]
    regions_a = [r for r in regions if r["doc_id"] == a]
    seq = store.snapshot().seq
    for _ in range(2):  # the same write twice leaves the same rows; one snapshot each
        snap = store.upsert(doc_a, pages_a, regions_a)
        assert store.count_rows() == before
    assert snap.seq == seq + 2
    # a document that shrank to one page and one region: its other rows go in the same commit
    store.upsert(doc_a, pages_a[:1], [r for r in regions_a if r["page_id"] == pages_a[0]["page_id"]][:1])
    assert sorted(p["page_number"] for p in _rows(store, PAGES) if p["doc_id"] == a) == [pages_a[0]["page_number"]]
    assert sum(r["doc_id"] == a for r in _rows(store, REGIONS)) == 1
    assert sum(r["doc_id"] == b for r in _rows(store, REGIONS)) == 2  # other documents untouched
    # superseded rows are gone from the table, not only hidden
    assert store.dataset(PAGES).count_rows() == store.count_rows()[PAGES]


def test_readers_see_the_published_snapshot_only(tmp_path):
    """Rows appended but not confirmed by a published commit stay invisible (a writer mid-commit)."""
    from snappy.storage.writer import write_fragments

    store = write_index(str(tmp_path / "idx"), _docs())
    a = doc_id_for("file:///corpus/a.pdf")
    before, snap = store.count_rows(), store.snapshot()
    pages = store.read(PAGES)
    stray = pages.set_column(pages.schema.get_field_index("gen"), "gen", pa.array([999] * pages.num_rows, pa.int64()))
    import lance

    frags = write_fragments(store.table_uri(PAGES), stray, store.storage_options)
    from lance.fragment import FragmentMetadata
    import json

    lance.LanceDataset.commit(store.table_uri(PAGES), lance.LanceOperation.Append(
        [FragmentMetadata.from_json(json.dumps(f)) for f in frags]), read_version=store.dataset(PAGES).version)
    assert store.dataset(PAGES).count_rows() == 2 * before[PAGES]  # in the table ...
    assert store.count_rows() == before and store.snapshot() == snap  # ... but not in the index
    # the next writer sweeps them (a writer that died between its Lance commits and its snapshot)
    with store.writer() as w:
        out = w.recover()
    assert out["swept"] == {PAGES: 1}
    assert store.dataset(PAGES).count_rows() == before[PAGES] and store.snapshot().seq == snap.seq + 1
    assert {p["gen"] for p in _rows(store, PAGES) if p["doc_id"] == a} == \
        {d["gen"] for d in store.documents().to_pylist() if d["doc_id"] == a}


def test_delete_documents_and_errors(tmp_path):
    store = write_index(str(tmp_path / "idx"), _docs())
    a = doc_id_for("file:///corpus/a.pdf")
    store.delete_documents([a])
    assert store.count_rows() == {DOCUMENTS: 2, PAGES: 1, REGIONS: 2}
    pages = [p for p in _rows(store, PAGES)]
    docs = store.documents().to_pylist()
    with pytest.raises(ValueError, match="duplicate page_id"):
        store.upsert(docs, pages + pages)
    with pytest.raises(ValueError, match="not in this write"):
        store.upsert([d for d in docs if d["doc_id"] != pages[0]["doc_id"]], pages)
    with pytest.raises(ValueError, match="lacks columns"):
        store.upsert(docs, pa.Table.from_pylist(pages).drop_columns(["grid"]))
    assert store.count_rows() == {DOCUMENTS: 2, PAGES: 1, REGIONS: 2}  # failed writes changed nothing
    with pytest.raises(FileNotFoundError, match="does not exist"):
        IndexStore(str(tmp_path / "nothing")).dataset(PAGES)
    assert IndexStore(str(tmp_path / "nothing")).versions() == {}
    assert IndexStore(str(tmp_path / "nothing")).documents().num_rows == 0


def test_housekeeping_compacts_indexes_and_bounds_size(tmp_path):
    from snappy.storage.housekeeping import HousekeepingOptions, housekeep

    store = write_index(str(tmp_path / "idx"), _docs())
    a = doc_id_for("file:///corpus/a.pdf")
    docs = [d for d in store.documents().to_pylist() if d["doc_id"] == a]
    pages, regions = [p for p in _rows(store, PAGES) if p["doc_id"] == a], [r for r in _rows(store, REGIONS) if r["doc_id"] == a]
    for _ in range(5):  # re-write one document: new fragments, deletions in the old ones, new versions
        store.upsert(docs, pages, regions)
    assert len(store.dataset(PAGES).get_fragments()) > 1 and len(store.dataset(PAGES).versions()) > 5
    with store.writer() as w:
        out = housekeep(w, HousekeepingOptions(retain_s=0))
    for name in (DOCUMENTS, PAGES, REGIONS):
        ds = store.dataset(name)
        assert len(ds.get_fragments()) == 1 and len(ds.versions()) == 1, name
        assert {c for i in ds.describe_indices() for c in i.field_names} >= {"doc_id"}
    assert set(out[PAGES]["indexes"]) == {"page_id", "doc_id"} and set(out[REGIONS]["indexes"]) == {"page_id", "doc_id"}
    assert store.count_rows() == {DOCUMENTS: 3, PAGES: 3, REGIONS: 7}
    assert store.snapshot().versions == store.latest_versions()


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
    assert store.snapshot().seq == 1 and store.count_rows() == {DOCUMENTS: 3, PAGES: 3, REGIONS: 7}
    a = doc_id_for("file:///corpus/a.pdf")
    regions = [r for r in _rows(store, REGIONS) if r["doc_id"] == a]
    pages = [p for p in _rows(store, PAGES) if p["doc_id"] == a]
    assert store.upsert([d for d in store.documents().to_pylist() if d["doc_id"] == a], pages,
                        regions[:1]).seq == 2
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
    assert s.n_pages == 3


def test_run_ids_list_in_start_order_within_one_second(tmp_path):
    from snappy.storage import runlog
    from snappy.storage.fs import Files

    files = Files(str(tmp_path))
    t = 1_790_000_000.0
    ids = [runlog.new_run_id(t + i * 0.001) for i in range(5)]
    for i, run_id in enumerate(reversed(ids)):  # written out of order
        runlog.write(files, {"run_id": run_id, "n": i})
    assert [r["run_id"] for r in runlog.recent(files, 5)] == ids[::-1]


def test_region_source_is_stored_and_old_tables_gain_it_as_ocr(tmp_path, monkeypatch):
    """The regions table says where each region's text came from: "pdf" (the text layer) or "ocr";
    a block is "pdf" only when all its lines are. A table written before the column gains it by
    migration, its rows "ocr" (before the text layer every region came from OCR)."""
    from snappy.regions.region import Region
    from snappy.storage import schema as sch
    from snappy.indexing.records import region_table

    grid = PatchGrid.uniform("t", (800, 600), 4, 16)
    pdf = [Region((50, 100 + 26 * k, 700, 120 + 26 * k), (800, 600), f"pdf line {k}", source="pdf") for k in range(3)]
    ocr = [Region((50, 400, 300, 420), (800, 600), "ocr line"), Region((50, 426, 300, 446), (800, 600), "ocr two")]
    rows = region_table("d", 1, pdf + ocr, grid).to_pylist()
    assert [(r["level"], r["source"]) for r in rows] == [("line", "pdf")] * 3 + [("line", "ocr")] * 2 + [
        ("block", "pdf"), ("block", "ocr")]
    mixed = region_table("d", 1, pdf[:1] + [Region((50, 126, 700, 146), (800, 600), "ocr", source="ocr")], grid).to_pylist()
    assert mixed[-1]["level"] == "block" and mixed[-1]["source"] == "ocr"
    assert Region.from_dict(pdf[0].to_dict()).source == "pdf"
    assert Region.from_dict({k: v for k, v in pdf[0].to_dict().items() if k != "source"}).source == "ocr"
    with pytest.raises(ValueError, match="source"):
        Region((0, 0, 1, 1), (10, 10), source="scan")

    para = [((50, 100, 700, 120), "quarterly revenue grew"), ((50, 126, 700, 146), "by twelve percent in")]
    new_schema = sch.SCHEMAS[REGIONS]
    monkeypatch.setitem(sch.SCHEMAS, REGIONS, lambda: pa.schema([f for f in new_schema() if f.name != "source"]))
    store = write_index(str(tmp_path / "idx"), [SynthDocSpec("mem://old.pdf", [SynthPageSpec((800, 600), para)])])
    assert "source" not in store.dataset(REGIONS).schema.names  # as snappy wrote it before the text layer
    monkeypatch.undo()
    write_index(str(tmp_path / "idx"), [SynthDocSpec("mem://new.pdf", [SynthPageSpec((800, 600), para)])])
    table = store.read("regions", ["doc_id", "source"])
    assert table.schema.field("source").type == pa.string()
    old_id = doc_id_for("mem://old.pdf")
    assert {r["source"] for r in table.to_pylist() if r["doc_id"] == old_id} == {"ocr"}  # migrated
    assert {r["source"] for r in table.to_pylist() if r["doc_id"] != old_id} == {"ocr"}  # synthetic regions: OCR
