"""Metric definitions, baselines on a constructed page, token conventions, dataset loaders."""
from __future__ import annotations

import json

import numpy as np
import pytest

from snappy.eval import baselines as bl
from snappy.eval.datasets import DatasetError, exists, load_bbox_docvqa, load_dataset, load_jsonl, open_image
from snappy.eval.metrics import area_overlap, coverage, paper_sample_iou, score_page, summarize_paper
from snappy.eval.runner import EvalConfig, evaluate_page
from snappy.eval import tokens
from snappy.eval.tokens import TokenizerUnavailable, fit_image_size, image_tokens, text_counter

# 10 equal, disjoint regions in a row (100 x 20 px each); the answer is region 3 exactly.
REGIONS = np.array([[i * 100, 0, i * 100 + 100, 20] for i in range(10)], dtype=np.float64)
GT = REGIONS[[3]]


def test_paper_sample_iou_is_best_single_region_mean_over_gt():
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    pred = np.array([[0, 0, 10, 5], [0, 0, 10, 10]], float)  # second box matches gt[0]; gt[1] unmatched
    assert paper_sample_iou(gt, pred) == pytest.approx(0.5)
    # a union of two half boxes is not credited: each single region is compared alone
    halves = np.array([[20, 0, 25, 10], [25, 0, 30, 10]], float)
    assert paper_sample_iou(gt[1:], halves) == pytest.approx(0.5)
    assert paper_sample_iou(gt, np.zeros((0, 4))) == 0.0


def test_summarize_paper_hits_are_inclusive_and_skip_failed():
    s = summarize_paper([0.5, 0.7, 0.2, float("nan")], [False, False, False, True],
                        [(10, 20, 40), (5, 10, 40), (0, 10, 40), (None, None, None)])
    assert s.n_scored == 3 and s.n_failed == 1
    assert s.hit_rate == {"0.25": pytest.approx(2 / 3), "0.5": pytest.approx(2 / 3), "0.7": pytest.approx(1 / 3)}
    assert s.token_savings_vs_all_ocr == pytest.approx(1 - 15 / 40)
    assert s.token_savings_vs_full_image == pytest.approx(1 - 15 / 120)


def test_union_areas_are_exact_without_double_counting():
    a = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], float)  # union 150
    g = np.array([[10, 0, 20, 10]], float)  # overlaps the union on [10, 15] -> 50
    ao = area_overlap(a, g)
    assert (ao.selected, ao.gt, ao.inter, ao.union) == (150.0, 100.0, 50.0, 200.0)
    np.testing.assert_allclose(coverage(np.array([[0, 0, 20, 10], [30, 0, 40, 10]], float), a), [0.75, 0.0])


def test_all_ocr_baseline_recalls_everything_with_low_precision():
    s = score_page(GT, REGIONS, REGIONS, np.arange(10))
    assert s.paper_iou == 1.0  # the paper's metric: every region returned finds the box
    assert s.area_precision == pytest.approx(0.1) and s.area_recall == 1.0
    assert s.union_iou == pytest.approx(0.1)
    assert s.region_precision == pytest.approx(0.1) and s.region_recall == 1.0
    assert s.kept_fraction == 1.0 and s.n_selected == 10


def test_random_baseline_same_size_seeded_and_averaged():
    scores = np.linspace(0, 1, 10).astype(np.float32)
    scores[3] = 2.0  # the method ranks the answer first
    cfg = EvalConfig(threshold="top3", random_repeats=4000, curve=("top3",))
    res = evaluate_page(GT, REGIONS, scores, cfg, np.random.default_rng(0))
    assert sorted(res["pred_idx"]) == [3, 8, 9]
    draws = np.asarray(res["per_gt"]["random"])  # [repeats, G]
    assert draws.shape == (4000, 1)
    # each draw holds exactly 3 regions: the answer is in it with probability 3/10
    assert draws.mean() == pytest.approx(0.3, abs=0.03)
    assert set(np.unique(draws)) <= {0.0, 1.0}
    assert res["scores"]["random"]["n_selected"] == 3
    assert res["scores"]["random"]["area_precision"] == pytest.approx(0.1, abs=0.01)  # E = (3/10) * (1/3)
    assert res["scores"]["method"]["area_precision"] == pytest.approx(1 / 3)
    assert res["scores"]["all_ocr"]["kept_fraction"] == 1.0
    assert res["scores"]["ceiling"]["area_precision"] == 1.0 and res["selections"]["ceiling"] == [3]
    # seeded: the same seed gives the same draws, another seed others
    d1 = bl.random_selections(10, 3, 5, np.random.default_rng(7))
    assert np.array_equal(d1, bl.random_selections(10, 3, 5, np.random.default_rng(7)))
    assert not np.array_equal(d1, bl.random_selections(10, 3, 5, np.random.default_rng(8)))
    assert all(len(set(row)) == 3 for row in d1)


def test_flat_score_map_selects_nothing():
    res = evaluate_page(GT, REGIONS, np.full(10, 0.3, np.float32), EvalConfig(curve=("p50",)),
                        np.random.default_rng(0))
    assert res["pred_idx"] == []
    assert res["scores"]["method"]["n_selected"] == 0 and res["scores"]["method"]["kept_fraction"] == 0.0
    assert res["scores"]["random"]["n_selected"] == 0  # same size as the method's selection


def test_oracle_patch_scores_cover_the_gt():
    patches = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10]], float)
    np.testing.assert_allclose(bl.oracle_patch_scores(patches, np.array([[5, 0, 20, 10]], float)), [0.5, 1.0, 0.0])


def test_image_token_formula():
    assert image_tokens(2550, 3300) == 2531  # 300-dpi Letter, as in the paper's runs
    assert image_tokens(2480, 3508) == 2316  # 300-dpi A4
    assert fit_image_size(3300, 2550) == (1568, 1211)
    assert fit_image_size(800, 600) == (800, 600)  # never upscaled
    assert image_tokens(800, 600) == 640


def test_text_counter_is_exact_offline_from_the_bundled_file(monkeypatch):
    monkeypatch.delenv("SNAPPY_CL100K_FILE", raising=False)
    c = text_counter()
    assert c.exact
    enc = tokens.load_cl100k()
    assert enc.encode("hello world") == [15339, 1917]  # cl100k_base ids
    assert c("Hello world, tokens!") == 5


def test_text_counter_without_any_copy_is_a_clear_error(tmp_path, monkeypatch):
    import tiktoken

    monkeypatch.delenv("SNAPPY_CL100K_FILE", raising=False)
    monkeypatch.setattr(tokens, "_bundled_cl100k", lambda: None)
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: (_ for _ in ()).throw(ConnectionError("offline")))
    with pytest.raises(TokenizerUnavailable) as e:
        text_counter()
    assert "--tiktoken-file" in str(e.value) and "--approx-text-tokens" in str(e.value)
    c = text_counter(approximate=True)
    assert not c.exact and c("zephyr turbine produced forty megawatts") >= 5
    fake = tmp_path / "cl100k_base.tiktoken"
    fake.write_bytes(b"aGVsbG8= 0\n")
    with pytest.raises(TokenizerUnavailable, match="cl100k_base.tiktoken"):
        text_counter(fake)


def test_bbox_docvqa_loader_on_the_annotation_sample(anchors_dir):
    ann = anchors_dir / "bbox-docvqa" / "benchmark_v2.sample10.jsonl"
    samples = load_bbox_docvqa(str(ann))
    assert len(samples) == 10 and samples[0].sample_id == "0"
    s = samples[0]
    assert s.category == "cs" and s.pages[0].page == 4 and not s.multi_page
    assert s.pages[0].image.endswith("cs/2311.07631/2311.07631_4.png")
    np.testing.assert_array_equal(s.gt_boxes, [[281, 2228, 1890, 2941]])
    assert [x.sample_id for x in load_dataset(str(ann))] == [str(i) for i in range(10)]


def test_generic_jsonl_errors_name_file_and_line(tmp_path):
    p = tmp_path / "set.jsonl"
    p.write_text(json.dumps({"query": "q", "image": "a.png", "boxes": [[0, 0, 1, 1]]}) + "\n"
                 + json.dumps({"image": "b.png", "boxes": [[0, 0, 1, 1]]}) + "\n")
    with pytest.raises(DatasetError, match=r"set.jsonl:2.*query"):
        load_jsonl(str(p))
    p.write_text(json.dumps({"query": "q", "image": "a.png", "boxes": [[5, 0, 1, 1]]}) + "\n")
    with pytest.raises(DatasetError, match=r"set.jsonl:1.*invalid box"):
        load_jsonl(str(p))


def test_generic_jsonl_from_s3(tmp_path, monkeypatch):
    moto = pytest.importorskip("moto")
    import boto3
    from PIL import Image

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("SNAPPY_S3_ENDPOINT", raising=False)
    with moto.mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="evalset")
        img = tmp_path / "p.png"
        Image.new("RGB", (40, 30), "white").save(img)
        s3.upload_file(str(img), "evalset", "set/pages/p.png")
        rec = {"id": "a", "query": "q", "pages": [{"image": "pages/p.png", "boxes": [[1, 1, 5, 5]]},
                                                 {"image": "pages/p.png", "boxes": [[2, 2, 6, 6]], "page": 2}]}
        s3.put_object(Bucket="evalset", Key="set/data.jsonl", Body=json.dumps(rec).encode())
        samples = load_jsonl("s3://evalset/set/data.jsonl")
        assert samples[0].multi_page and samples[0].pages[1].page == 2
        assert samples[0].pages[0].image == "s3://evalset/set/pages/p.png"
        assert open_image(samples[0].pages[0].image).size == (40, 30)
        with pytest.raises(DatasetError, match="s3://evalset/set/missing.jsonl"):
            load_jsonl("s3://evalset/set/missing.jsonl")
        assert exists("s3://evalset/set/data.jsonl") and not exists("s3://evalset/set/missing.jsonl")
        from botocore.exceptions import ClientError

        class Forbidden:
            def head_object(self, **kw):
                raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")

        with pytest.raises(DatasetError, match="s3://evalset/set/data.jsonl: cannot look up S3 object"):
            exists("s3://evalset/set/data.jsonl", Forbidden())  # an error, not "does not exist"


# ------------------------------------------------------------------ levels in the eval


def _block_page():
    """Six lines: a three-line paragraph, then three lone lines (one of them the answer)."""
    from snappy.regions.region import Region

    size = (1000, 1000)
    lines = [Region((50, 100 + 26 * k, 900, 120 + 26 * k), size, f"para {k}") for k in range(3)] + \
            [Region((50, 400 + 60 * k, 600, 420 + 60 * k), size, f"lone {k}") for k in range(3)]
    return size, lines


def test_kept_fraction_counts_line_equivalents_across_levels():
    from snappy.regions.blocks import with_blocks
    from snappy.regions.region import boxes_array

    _, lines = _block_page()
    stored, _ = with_blocks(lines)
    boxes, lb = boxes_array(stored), boxes_array(lines)
    assert stored[6].level == "block" and len(stored) == 7
    gt = lb[[4]]
    # one block of three lines, among six lines: half the page's lines, whatever the level says
    s = score_page(gt, boxes[[6]], boxes, np.array([6]), lines=lb)
    assert s.kept_fraction == pytest.approx(0.5) and s.n_selected == 1
    assert score_page(gt, lb[[4]], lb, np.array([4])).kept_fraction == pytest.approx(1 / 6)
    # random lines at the method's kept fraction: as many lines as the block covers
    scores = np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.9], np.float32)
    res = evaluate_page(gt, boxes, scores, EvalConfig(threshold="top1", random_repeats=50, curve=("top1",)),
                        np.random.default_rng(0), lines=lb,
                        select=lambda sc, spec: np.array([6]))
    assert res["scores"]["method"]["kept_fraction"] == pytest.approx(0.5)
    assert res["scores"]["random"]["n_selected"] == 3 and res["scores"]["random"]["kept_fraction"] == pytest.approx(0.5)


class _FixedScorer:
    """A page scorer over given lines whose patch map is the truth box (for level tests)."""

    name = "fixed"

    def __init__(self, lines, size):
        self.lines, self.size = lines, size

    def analyse(self, page, query, sample):
        from snappy.regions.propagation import RegionOverlap, region_scores
        from snappy.regions.region import boxes_array
        from snappy.eval.runner import PageAnalysis

        xs, ys = np.meshgrid(np.arange(0, self.size[0], 50), np.arange(0, self.size[1], 50))
        patches = np.stack([xs.ravel(), ys.ravel(), xs.ravel() + 50, ys.ravel() + 50], 1).astype(float)
        ps = bl.oracle_patch_scores(patches, page.gt_boxes)
        ov = RegionOverlap.build(patches, boxes_array(self.lines))
        return PageAnalysis(self.lines, region_scores(ps, ov, "iou"), ov, patches, self.size, None, ps, "iou")


def test_default_selection_ceilings_per_level_and_questions_without_words(tmp_path):
    from snappy.regions.blocks import DEFAULT_LEVEL, parse_selection
    from snappy.eval.datasets import EvalSample, EvidencePage
    from snappy.eval.runner import plan_selections, run_selections, summarize_records
    from snappy.regions.propagation import DEFAULT_THRESHOLD, Threshold

    assert parse_selection("default") == (DEFAULT_LEVEL, Threshold.parse(DEFAULT_THRESHOLD))
    assert DEFAULT_LEVEL == "auto"
    size, lines = _block_page()
    para = [50, 100, 900, 172]
    samples = [EvalSample("para", "para words", [EvidencePage(1, "page", np.array([para], float))]),
               EvalSample("lone", "lone words", [EvidencePage(1, "page", np.array([lines[4].bbox], float))]),
               EvalSample("dash", " - : ", [EvidencePage(1, "page", np.array([lines[4].bbox], float))])]
    cfgs = plan_selections(["line:gap", "block:gap", "default"])
    res = run_selections(samples, _FixedScorer(lines, size), cfgs, None, None, progress=False)
    by = {k: {r["sample_id"]: r for r in v.records} for k, v in res.items()}
    # every record carries the ceilings of all three levels, whatever its own level
    assert by["line:gap"]["para"]["ceilings"]["line"] < 0.5 < by["line:gap"]["para"]["ceilings"]["block"]
    assert by["line:gap"]["lone"]["ceilings"] == {"line": 1.0, "block": 1.0, "auto": 1.0}
    # the default answers the paragraph with its block and the lone line with the line
    assert by["default"]["para"]["values"]["oracle"][0] > 0.9 and by["default"]["lone"]["values"]["oracle"][0] == 1.0
    assert by["line:gap"]["para"]["values"]["oracle"][0] < 0.5
    s = summarize_records(res["default"].records, cfgs["default"])
    assert s["n_scored"] == 2 and s["n_failed"] == 0  # the punctuation-only question is neither
    assert s["no_words"] == [{"sample_id": "dash", "question": " - : "}]
    assert s["ceilings"]["line"]["hit_rate"]["0.5"] == pytest.approx(0.5)
    assert s["ceilings"]["auto"]["hit_rate"]["0.5"] == 1.0
    # rescored from its records (`snappy eval -p samples.jsonl`): the same questions scored, kept in lines
    from snappy.eval.predictions import evaluate_predictions, load_predictions

    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in res["default"].records))
    again = evaluate_predictions(load_predictions(path))
    assert again["n_scored"] == 2 and again["n_failed"] == 0
    assert again["precision"]["kept_fraction"] == pytest.approx(s["systems"]["method"]["precision"]["kept_fraction"])
