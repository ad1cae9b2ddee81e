"""Pages/s of one GPU embed actor with the full-size ColQwen2.5 architecture, and OCR CPUs per GPU.

    python benchmarks/bench_gpu_embed.py                         # on a GPU machine: full size, bf16
    python benchmarks/bench_gpu_embed.py --scale tiny --pages 8  # smoke test on CPU (what CI could run)

No weights are downloaded: the model is ColQwen2.5's architecture (Qwen2.5-VL-3B text and vision
towers, the 128-d projection) built from its configuration with random weights, so it costs the
same FLOPs as ``vidore/colqwen2.5-v0.2``; the processor is the real Qwen2-VL image processor at
ColQwen2.5's 768-visual-token cap (a 150-dpi Letter page -> 24x31 tokens), with a small offline
tokenizer (the vocabulary only sizes an embedding table the page path barely touches). The model
is saved to a local folder and loaded by snappy's own loading code, then driven through
``pipelines.stages.EmbedStage`` as a Ray actor holding one GPU, on rendered 150-dpi pages, for
several batch sizes. The OCR rate (``--ocr``, CPU, one thread per engine) on the same pages gives
how many OCR CPUs keep one GPU busy.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# Qwen2.5-VL-3B (what ColQwen2.5-v0.2 fine-tunes), from its published config.json
FULL_TEXT = dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                 num_key_value_heads=2, max_position_embeddings=128000, rms_norm_eps=1e-6,
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]})
FULL_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                   patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                   fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu")
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=4096,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
TINY_VISION = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                   spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[0])


def build_model(out: Path, scale: str) -> tuple[Path, int]:
    """A ColQwen2.5 folder (config + random weights + processor) that snappy loads like a real one."""
    import colpali_engine as ce
    import torch
    from transformers import Qwen2_5_VLConfig

    from snappy.encoders.tiny import build_tiny_processor

    processor = build_tiny_processor("colqwen2.5", max_pixels=768 * 28 * 28)  # ColQwen2.5's token cap
    tok = processor.tokenizer
    ids = {k: tok.convert_tokens_to_ids(t) for k, t in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = dict(FULL_TEXT if scale == "full" else TINY_TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                eos_token_id=tok.pad_token_id, bos_token_id=ids["vision_start_token_id"])
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=FULL_VISION if scale == "full" else TINY_VISION, **ids)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = ce.ColQwen2_5(cfg).to(torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    del model
    return out, params


def pages_table(n: int, dpi: float):
    """n rendered Letter text pages as prepare_documents rows (with pixels)."""
    import pyarrow as pa

    from pipelines.stages import _page_table
    from snappy.documents.pages import RenderOptions, iter_pages
    from snappy.testing.synth import write_page_corpus

    folder = Path(tempfile.mkdtemp(prefix="snappy-gpu-"))
    rows = []
    for path in write_page_corpus(folder, n, pages_per_doc=n):
        for page in iter_pages(str(path), RenderOptions(dpi=dpi)):
            rows.append(_page_table({"doc_id": "0" * 16, "gen": 1, "uri": str(path)}, page, True, 85, 0.0))
    return pa.concat_tables(rows)


def embed_rate(model_dir: Path, table, batch_sizes, repeats: int) -> list[dict]:
    import ray

    from pipelines.stages import EmbedStage

    gpus = 1 if _cuda() else 0
    ray.init(address="local", include_dashboard=False, log_to_driver=False, num_gpus=gpus)
    try:
        actor = ray.remote(EmbedStage).options(num_gpus=gpus, num_cpus=1).remote(str(model_dir), 128)
        out = []
        for bs in batch_sizes:
            batch = table.slice(0, bs)
            ray.get(actor.__call__.remote(batch))  # warm-up (kernels, allocator)
            t = time.perf_counter()
            for _ in range(repeats):
                res = ray.get(actor.__call__.remote(batch))
            wall = time.perf_counter() - t
            errors = [e for e in res.column("error").to_pylist() if e]
            out.append({"batch": bs, "pages_per_s": round(bs * repeats / wall, 2), "errors": errors[:1],
                        "tokens_per_page": res.column("n_tokens")[0].as_py(),
                        "device": json.loads(res.column("embed_worker")[0].as_py())["device"]})
        return out
    finally:
        ray.shutdown()


def ocr_rate(table, engine: str, pages: int) -> dict:
    from pipelines.stages import _image
    from snappy.ocr import make_ocr

    ocr = make_ocr(engine)
    ocr.recognize(_image(table, 0))  # warm-up
    t = time.process_time()
    w = time.perf_counter()
    for i in range(min(pages, table.num_rows)):
        ocr.recognize(_image(table, i))
    n = min(pages, table.num_rows)
    return {"engine": engine, "cpu_s_per_page": round((time.process_time() - t) / n, 2),
            "wall_s_per_page": round((time.perf_counter() - w) / n, 2)}


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=["full", "tiny"], default="full")
    p.add_argument("--pages", type=int, default=32)
    p.add_argument("--dpi", type=float, default=150.0)
    p.add_argument("--batch-sizes", default="4,8,16,32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ocr", default="rapid", help="OCR engine whose CPU rate sizes the pool ('' to skip)")
    p.add_argument("--ocr-pages", type=int, default=4)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    from snappy._compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    t = time.perf_counter()
    model_dir, params = build_model(Path(tempfile.mkdtemp(prefix="colqwen25-random-")), args.scale)
    out = {"scale": args.scale, "parameters": params, "build_s": round(time.perf_counter() - t, 1),
           "cuda": _cuda(), "dpi": args.dpi}
    table = pages_table(max(args.pages, max(int(b) for b in args.batch_sizes.split(","))), args.dpi)
    sizes = [int(b) for b in args.batch_sizes.split(",") if int(b) <= table.num_rows]
    out["embed"] = embed_rate(model_dir, table, sizes, args.repeats)
    if args.ocr:
        out["ocr"] = ocr_rate(table, args.ocr, args.ocr_pages)
        best = max(r["pages_per_s"] for r in out["embed"])
        out["ocr_cpus_per_gpu"] = round(best * out["ocr"]["cpu_s_per_page"], 1)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
