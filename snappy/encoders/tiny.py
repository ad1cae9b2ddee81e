"""Tiny randomly initialised ColPali-family models and processors, built fully offline.

For tests and smoke runs only: the weights are random, but the processors, token layout
and patch geometry are the real library code paths (transformers + colpali-engine), so
everything that depends on geometry behaves exactly like the full-size models.

Building is deterministic for a given ``(family, seed)`` (same tokenizer, same weights),
so pipeline actors in different processes that build or load the same folder agree.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TINY_FAMILIES = ("colqwen2.5", "colqwen2", "colidefics3")
PROCESSOR_FAMILIES = ("colqwen2.5", "colqwen2", "colqwen3", "colpali", "colidefics3", "colsmol", "colmodernvbert")
_FORMAT_VERSION = 1  # bump when the tiny architecture changes; it is part of the folder name
TINY_MARKER = "snappy-tiny.json"

_SENTENCES = [
    "The quarterly revenue grew by twelve percent compared to last year.",
    "Figure 3 shows the distribution of patch similarities over the page.",
    "Invoice number 4521 was issued on March 3rd to ACME Corporation.",
    "Table 2: results of the retrieval benchmark with and without OCR regions.",
    "Describe the image. Where is the signature on this contract?",
    "Query: what is the total amount due? Answer: 1,234.56 EUR.",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;!?()[]{}<>-_/'\"",
]

_QWEN_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
_IDEFICS_SPECIAL = (
    ["<|endoftext|>", "<|im_start|>", "<|begin_of_text|>", "<end_of_utterance>", "<fake_token_around_image>",
     "<image>", "<global-img>"]
    + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
)
_PALI_SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"]


def default_cache_dir() -> Path:
    """``$SNAPPY_CACHE`` if set, else ``~/.cache/snappy``."""
    env = os.environ.get("SNAPPY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "snappy"


def tiny_model_dir(family: str = "colqwen2.5", seed: int = 0, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``build_tiny_model`` puts a model by default: ``<cache>/tiny/<family>-s<seed>-v<version>``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "tiny" / f"{normalize_family(family)}-s{seed}-v{_FORMAT_VERSION}"


def _train_tokenizer(special: list[str], pad: str, vocab_size: int = 400, **named: str):
    """Byte-level BPE trained on a few sentences, with ``special`` as atomic tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from snappy._compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_SENTENCES, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, **named)


def normalize_family(family: str) -> str:
    f = family.lower().replace("_", ".")
    aliases = {"colqwen2.5": "colqwen2.5", "colqwen25": "colqwen2.5", "colqwen2": "colqwen2",
               "colqwen3": "colqwen3", "colpali": "colpali", "colidefics3": "colidefics3",
               "colsmol": "colsmol", "colmodernvbert": "colmodernvbert"}
    if f not in aliases:
        raise ValueError(f"unknown tiny family {family!r}; expected one of {PROCESSOR_FAMILIES}")
    return aliases[f]


def build_tiny_processor(family: str = "colqwen2.5", **image_kwargs: Any):
    """A colpali-engine processor for ``family`` with a locally trained tokenizer.

    The image processor uses the library defaults of the real checkpoints' processors;
    ``image_kwargs`` override them (e.g. ``max_pixels`` for Qwen, ``size`` /
    ``max_image_size`` for Idefics3, ``size`` for PaliGemma) and ``image_seq_len``
    (Idefics3-style) / ``image_seq_length`` (PaliGemma) set the tokens per tile/image.
    """
    from snappy._compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    fam = normalize_family(family)
    if fam in ("colqwen2", "colqwen2.5", "colqwen3"):
        import colpali_engine as ce
        from transformers import Qwen2VLImageProcessor

        tok = _train_tokenizer(_QWEN_SPECIAL, pad="<|endoftext|>")
        kw = {"min_pixels": 4 * 28 * 28, "max_pixels": 768 * 28 * 28}
        if fam == "colqwen3":  # Qwen3-VL: 16 px patches, merge 2 -> 32 px per token
            kw = {"min_pixels": 4 * 32 * 32, "max_pixels": 768 * 32 * 32, "patch_size": 16}
        kw.update(image_kwargs)
        ip = Qwen2VLImageProcessor(**kw)
        if fam == "colqwen3":
            from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

            vp = Qwen3VLVideoProcessor(patch_size=kw.get("patch_size", 16))
            return ce.ColQwen3Processor(image_processor=ip, tokenizer=tok, video_processor=vp)
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        cls = ce.ColQwen2_5_Processor if fam == "colqwen2.5" else ce.ColQwen2Processor
        return cls(image_processor=ip, tokenizer=tok, video_processor=Qwen2VLVideoProcessor())
    if fam in ("colidefics3", "colsmol", "colmodernvbert"):
        import colpali_engine as ce
        from transformers import Idefics3ImageProcessor

        tok = _train_tokenizer(_IDEFICS_SPECIAL, pad="<|endoftext|>")
        kw = dict(image_kwargs)
        seq_len = kw.pop("image_seq_len", None)
        if fam == "colidefics3":  # Idefics3-8B: 364 px tiles, 169 = 13x13 tokens per tile
            kw.setdefault("size", {"longest_edge": 4 * 364})
            kw.setdefault("max_image_size", {"longest_edge": 364})
            seq_len = seq_len or 169
        else:  # SmolVLM / ModernVBert: 512 px tiles, 64 = 8x8 tokens per tile
            kw.setdefault("size", {"longest_edge": 2048})
            kw.setdefault("max_image_size", {"longest_edge": 512})
            seq_len = seq_len or 64
        ip = Idefics3ImageProcessor(**kw)
        cls = ce.ColModernVBertProcessor if fam == "colmodernvbert" else ce.ColIdefics3Processor
        return cls(image_processor=ip, tokenizer=tok, image_seq_len=seq_len)
    # colpali: PaliGemma with a SigLIP 448x448 image processor, 1024 = 32x32 tokens
    import colpali_engine as ce
    from transformers import SiglipImageProcessor

    tok = _train_tokenizer(_PALI_SPECIAL, pad="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")
    kw = dict(image_kwargs)
    seq = kw.pop("image_seq_length", 1024)
    kw.setdefault("size", {"height": 448, "width": 448})
    ip = SiglipImageProcessor(**kw)
    ip.image_seq_length = seq
    return ce.ColPaliProcessor(image_processor=ip, tokenizer=tok)


def _tiny_model(family: str, processor):
    """Random tiny model matching ``processor``'s tokenizer and geometry."""
    import colpali_engine as ce

    tok = processor.tokenizer
    vocab = len(tok)
    if family in ("colqwen2.5", "colqwen2"):
        ids = {k: tok.convert_tokens_to_ids(t) for k, t in (
            ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
        # hidden 64, 4 heads -> head_dim 16; the M-RoPE sections (t, h, w) sum to head_dim / 2
        text = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                    bos_token_id=ids["vision_start_token_id"], eos_token_id=tok.pad_token_id,
                    pad_token_id=tok.pad_token_id)
        if family == "colqwen2.5":
            from transformers import Qwen2_5_VLConfig

            vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                          patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                          fullatt_block_indexes=[0])
            cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
            return ce.ColQwen2_5(cfg)
        from transformers import Qwen2VLConfig

        vision = dict(depth=1, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
        cfg = Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
        return ce.ColQwen2(cfg)
    if family == "colidefics3":
        from transformers import Idefics3Config

        tile = processor.image_processor.max_image_size["longest_edge"]
        patch, scale = 16, 2
        if (tile // patch // scale) ** 2 != processor.image_seq_len:
            raise ValueError(f"tile {tile}px / patch {patch} / scale {scale} does not give "
                             f"{processor.image_seq_len} tokens per tile")
        text = dict(model_type="llama", vocab_size=vocab, hidden_size=64, intermediate_size=128,
                    num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                    max_position_embeddings=4096, pad_token_id=tok.pad_token_id)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      image_size=tile, patch_size=patch)
        cfg = Idefics3Config(text_config=text, vision_config=vision, scale_factor=scale,
                             image_token_id=processor.image_token_id)
        return ce.ColIdefics3(cfg)
    raise ValueError(f"no tiny model for family {family!r}; expected one of {TINY_FAMILIES}")


def _tiny_processor_for_model(family: str):
    if family == "colidefics3":  # small tiles keep the tiny model fast: 128 px, 4x4 tokens per tile
        return build_tiny_processor(family, size={"longest_edge": 512}, max_image_size={"longest_edge": 128},
                                    image_seq_len=16)
    return build_tiny_processor(family, max_pixels=256 * 28 * 28)


def build_tiny_model(family: str = "colqwen2.5", out_dir: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Build (or reuse) a tiny random ``family`` model + processor folder and return its path.

    ``out_dir`` defaults to ``tiny_model_dir(family, seed)``. A complete
    folder (marker file present) is reused as is; a new one is built in a temporary sibling
    folder and renamed into place, so concurrent builders never see a half-written folder.
    """
    fam = normalize_family(family)
    if fam not in TINY_FAMILIES:
        raise ValueError(f"no tiny model for family {family!r}; expected one of {TINY_FAMILIES}")
    out = Path(out_dir) if out_dir is not None else tiny_model_dir(fam, seed)
    if (out / TINY_MARKER).is_file():
        return out
    import torch

    processor = _tiny_processor_for_model(fam)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _tiny_model(fam, processor)
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        meta = {"family": fam, "seed": seed, "version": _FORMAT_VERSION, "weights_sha256": _weights_hash(tmp)}
        (tmp / TINY_MARKER).write_text(json.dumps(meta, indent=1))
        if out.exists() and not (out / TINY_MARKER).is_file():
            shutil.rmtree(out)  # an incomplete folder from an interrupted build
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / TINY_MARKER).is_file():  # lost a race: another process finished first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("built tiny %s model (seed %d) in %s", fam, seed, out)
    return out


def tiny_family(path: str | os.PathLike) -> str | None:
    """The family recorded in a tiny model folder, or None for other folders."""
    marker = Path(path) / TINY_MARKER
    if not marker.is_file():
        return None
    return json.loads(marker.read_text())["family"]


def _weights_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()
