"""ColPali-family page/query encoders through colpali-engine (ColQwen2/2.5/3, ColPali, ColIdefics3,
ColSmol, ColModernVBert).

Pages give one 128-d vector per image token (``input_ids == image_token_id``), in token order,
with the exact ``PatchGrid`` from ``snappy.patches.geometry``; the two are checked to agree. Real
checkpoints load by Hugging Face id or local folder with the same code; ``ColpaliEncoder.tiny``
builds and loads a tiny random model offline (tests).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from snappy.patches import geometry
from snappy.encoders.base import Encoder, PageEmbedding
from snappy.patches.grid import PatchGrid
from snappy.regions.region import Region

log = logging.getLogger(__name__)

MODEL_ALIASES = {
    "colqwen2.5": "vidore/colqwen2.5-v0.2",
    "colqwen2": "vidore/colqwen2-v1.0",
    "colpali": "vidore/colpali-v1.3",
    "colsmol": "vidore/colSmol-256M",
    "colmodernvbert": "ModernVBERT/colmodernvbert",
}

# family -> (model class, processor class) in colpali_engine
_CLASSES = {
    "colqwen2.5": ("ColQwen2_5", "ColQwen2_5_Processor"),
    "colqwen2": ("ColQwen2", "ColQwen2Processor"),
    "colqwen3": ("ColQwen3", "ColQwen3Processor"),
    "colpali": ("ColPali", "ColPaliProcessor"),
    "colidefics3": ("ColIdefics3", "ColIdefics3Processor"),
    "colsmol": ("ColIdefics3", "ColIdefics3Processor"),
    "colmodernvbert": ("ColModernVBert", "ColModernVBertProcessor"),
}
_MODEL_TYPES = {
    "qwen2_5_vl": "colqwen2.5", "qwen2_vl": "colqwen2", "qwen3_vl": "colqwen3", "paligemma": "colpali",
    "idefics3": "colidefics3", "smolvlm": "colsmol", "modernvbert": "colmodernvbert",
    "colmodernvbert": "colmodernvbert",
}
# substrings of a model name, most specific first
_NAME_HINTS = (
    ("colqwen2.5", "colqwen2.5"), ("colqwen2_5", "colqwen2.5"), ("colqwen25", "colqwen2.5"),
    ("qwen2.5-vl", "colqwen2.5"), ("qwen2_5_vl", "colqwen2.5"), ("colqwen3", "colqwen3"),
    ("qwen3-vl", "colqwen3"), ("colqwen2", "colqwen2"), ("qwen2-vl", "colqwen2"), ("colsmol", "colsmol"),
    ("smolvlm", "colsmol"), ("modernvbert", "colmodernvbert"), ("idefics3", "colidefics3"),
    ("colpali", "colpali"), ("paligemma", "colpali"),
)


@dataclass(frozen=True)
class ColpaliOptions:
    model: str = "vidore/colqwen2.5-v0.2"  # Hugging Face id, local folder, or an alias (MODEL_ALIASES)
    family: str | None = None  # one of geometry.FAMILIES; None: detect from config / name
    batch_size: int = 4
    dtype: str = "auto"  # auto (bfloat16 on cuda, float32 on cpu) | bfloat16 | float16 | float32
    device: str = "auto"  # auto (cuda when available, else cpu) | cpu | cuda | cuda:N
    max_num_visual_tokens: int | None = None  # Qwen families: cap on image tokens (None: processor's)
    attn_implementation: str | None = None  # None: "eager" on cpu (SDPA NaNs on padded rows), default on cuda
    local_files_only: bool = False


def resolve_model(model: str) -> str:
    return MODEL_ALIASES.get(model.lower(), model) if not Path(model).exists() else model


def detect_family(model: str) -> str:
    """Family of a model id or folder: from its tiny marker, config, adapter config, else its name."""
    path = Path(model)
    if path.is_dir():
        from snappy.encoders.tiny import tiny_family

        fam = tiny_family(path)
        if fam:
            return fam
        cfg = path / "config.json"
        if cfg.is_file():
            fam = _MODEL_TYPES.get(json.loads(cfg.read_text()).get("model_type", ""))
            if fam == "colidefics3" and "smol" in str(path).lower():
                fam = "colsmol"
            if fam:
                return fam
        adapter = path / "adapter_config.json"
        if adapter.is_file():
            base = json.loads(adapter.read_text()).get("base_model_name_or_path", "")
            fam = _family_from_name(base)
            if fam:
                return fam
    fam = _family_from_name(model)
    if fam is None:
        raise ValueError(
            f"{model}: cannot tell the model family from its config or name; pass family= one of {geometry.FAMILIES}"
        )
    return fam


def _family_from_name(name: str) -> str | None:
    low = name.lower()
    return next((fam for hint, fam in _NAME_HINTS if hint in low), None)


class ColpaliEncoder(Encoder):
    """Multi-vector page/query encoder for ColPali-family models (via colpali-engine).

    The processor loads at construction (cheap; it fixes the geometry and ``encoder_id``),
    the model on first use, once per instance.
    """

    dim = 128
    needs_regions = False

    def __init__(self, options: ColpaliOptions | None = None, **overrides: Any):
        from dataclasses import replace

        opts = options or ColpaliOptions()
        if overrides:
            opts = replace(opts, **overrides)
        self.options = opts
        self.model_name = resolve_model(opts.model)
        self.family = opts.family or detect_family(self.model_name)
        if self.family not in _CLASSES:
            raise ValueError(f"unknown family {self.family!r}; expected one of {tuple(_CLASSES)}")
        self.device = _resolve_device(opts.device)
        self.processor = self._load_processor()
        self.image_token_id = int(self.processor.image_token_id)
        self._model = None
        self.encoder_id = self._make_encoder_id()

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def tiny(cls, family: str = "colqwen2.5", seed: int = 0, cache_dir: str | os.PathLike | None = None,
             **overrides: Any) -> "ColpaliEncoder":
        """Build (if needed) and load a tiny random ``family`` model (see snappy.encoders.tiny)."""
        from snappy.encoders.tiny import build_tiny_model, normalize_family, tiny_model_dir

        fam = normalize_family(family)
        path = build_tiny_model(fam, tiny_model_dir(fam, seed, cache_dir), seed=seed)
        overrides.setdefault("family", fam)
        return cls(ColpaliOptions(model=str(path)), **overrides)

    def _classes(self):
        from snappy._compat import ensure_torchvision_importable

        ensure_torchvision_importable()
        import colpali_engine

        model_cls, proc_cls = _CLASSES[self.family]
        return getattr(colpali_engine, model_cls), getattr(colpali_engine, proc_cls)

    def _load_processor(self):
        _, proc_cls = self._classes()
        kw: dict[str, Any] = {"local_files_only": self.options.local_files_only}
        if self.options.max_num_visual_tokens is not None:
            if self.family not in geometry.QWEN_FAMILIES:
                raise ValueError(f"max_num_visual_tokens applies to Qwen families, not {self.family}")
            kw["max_num_visual_tokens"] = int(self.options.max_num_visual_tokens)
        try:
            return proc_cls.from_pretrained(self.model_name, **kw)
        except OSError as e:
            raise OSError(f"{self.model_name}: cannot load the {self.family} processor ({e})") from e

    @property
    def model(self):
        """The loaded model (loads on first access)."""
        if self._model is None:
            self._model = self._load_model()
        return self._model

    def _load_model(self):
        model_cls, _ = self._classes()
        dtype = _resolve_dtype(self.options.dtype, self.device)
        attn = self.options.attn_implementation or ("eager" if self.device.type == "cpu" else None)
        kw: dict[str, Any] = {"dtype": dtype, "local_files_only": self.options.local_files_only}
        if attn:
            kw["attn_implementation"] = attn
        log.info("loading %s (%s) on %s as %s, attention %s", self.model_name, self.family, self.device, dtype,
                 attn or "default")
        try:
            model = model_cls.from_pretrained(self.model_name, **kw)
        except OSError as e:
            raise OSError(f"{self.model_name}: cannot load the {self.family} model ({e})") from e
        model = model.to(self.device).eval()
        dim = getattr(model, "dim", self.dim)
        if dim != self.dim:
            raise ValueError(f"{self.model_name}: embedding dim {dim}, expected {self.dim}")
        return model

    def _make_encoder_id(self) -> str:
        from snappy.encoders.tiny import TINY_MARKER

        name = self.model_name
        marker = Path(name) / TINY_MARKER
        if marker.is_file():  # tiny models: name them by recipe, not by local path
            meta = json.loads(marker.read_text())
            name = f"tiny-{meta['family']}-s{meta['seed']}-v{meta['version']}"
        kind = geometry.geometry_kind(self.processor)
        if kind == "qwen":
            p = geometry.qwen_params(self.processor)
            geo = f"minpx{p['min_pixels']}-maxpx{p['max_pixels']}-patch{p['patch_size']}-merge{p['merge_size']}"
        elif kind == "idefics3":
            p = geometry.idefics3_params(self.processor)
            geo = f"edge{p['longest_edge']}-tile{p['tile']}-tok{p['tokens_per_tile']}-split{int(p['do_image_splitting'])}"
        else:
            p = geometry.paligemma_params(self.processor)
            geo = f"{p['image_size'][0]}x{p['image_size'][1]}-tok{p['n_tokens']}"
        return f"colpali:{self.family}:{name}:{geo}"

    # --- Encoder API -------------------------------------------------------------------------

    def grid_for(self, page_size: tuple[int, int]) -> PatchGrid:
        return geometry.grid_for(self.processor, page_size, family=self.family)

    def embed_pages(
        self, images: Sequence[Image.Image], regions: Sequence[Sequence[Region]] | None = None
    ) -> list[PageEmbedding]:
        out: list[PageEmbedding] = []
        for start in range(0, len(images), self.options.batch_size):
            chunk = list(images[start:start + self.options.batch_size])
            batch = self._to_device(self.processor.process_images(chunk))
            emb = self._forward(batch)  # [B, L, 128]
            mask = batch["input_ids"] == self.image_token_id  # [B, L]
            for i, img in enumerate(chunk):
                vec = emb[i][mask[i]].float().cpu().numpy().astype(np.float16)  # [n_image_tokens, 128]
                grid = self.grid_for(img.size)
                if vec.shape[0] != grid.n_tokens:
                    raise RuntimeError(
                        f"{self.family} produced {vec.shape[0]} image tokens for a {img.size[0]}x{img.size[1]} page "
                        f"but its grid has {grid.n_tokens}; geometry and processor disagree"
                    )
                out.append(PageEmbedding(vectors=vec, grid=grid))
        return out

    def embed_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(texts), self.options.batch_size):
            chunk = list(texts[start:start + self.options.batch_size])
            batch = self._to_device(self.processor.process_queries(chunk))
            emb = self._forward(batch)  # [B, L, 128]
            keep = batch["attention_mask"].bool()  # drop padding rows
            out.extend(emb[i][keep[i]].float().cpu().numpy() for i in range(len(chunk)))  # [t, 128]
        return out

    def query_tokens(self, text: str) -> list[str]:
        batch = self.processor.process_queries([text])
        ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()  # the rows embed_queries keeps
        return [t.replace("\u0120", " ").replace("\u2581", " ").strip() or t
                for t in self.processor.tokenizer.convert_ids_to_tokens(ids)]

    # --- helpers -----------------------------------------------------------------------------

    def _to_device(self, batch):
        import torch

        dtype = next(self.model.parameters()).dtype
        return {
            k: (v.to(self.device, dtype=dtype) if torch.is_floating_point(v) else v.to(self.device))
            if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()
        }

    def _forward(self, batch: dict):
        import torch

        inputs = {k: v for k, v in batch.items() if k != "labels"}  # PaliGemma's processor adds labels
        with torch.inference_mode():
            return self.model(**inputs)


def _resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_dtype(dtype: str, device):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected auto, bfloat16, float16 or float32") from None
