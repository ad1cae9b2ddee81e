"""PaddleOCR model folders: provisioned offline from the rapidocr wheel, or user-provided.

PaddleOCR 3.x (PaddleX) ships no weights and fails offline, but with
``engine="onnxruntime"`` it runs any model folder holding ``inference.onnx`` and an
``inference.yml`` whose ``Global.model_name`` equals the model name it is given. The
``rapidocr`` wheel bundles the PP-OCRv6 small det/rec ONNX models; this module turns them
into such folders in a cache directory, writing the ``inference.yml`` exactly as PaddleX's
own weight converter does (``Global.model_name`` + PaddleX's inference metadata for the
model; for recognition ``PostProcess.character_dict`` from the ONNX ``character`` metadata).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Task = Literal["det", "rec"]

# PaddleX model name -> ONNX file in rapidocr/models/.
BUNDLED_MODELS: dict[str, str] = {
    "PP-OCRv6_small_det": "PP-OCRv6_det_small.onnx",
    "PP-OCRv6_small_rec": "PP-OCRv6_rec_small.onnx",
}
DEFAULT_DET_MODEL = "PP-OCRv6_small_det"
DEFAULT_REC_MODEL = "PP-OCRv6_small_rec"
_STAMP = "snappy-source.json"  # records what a provisioned folder was built from


class OcrModelError(ValueError):
    """An OCR model folder that cannot be used; the message names the folder and the reason."""

    def __init__(self, folder: str | Path, reason: str):
        super().__init__(f"OCR model folder {str(folder)!r}: {reason}")
        self.folder = str(folder)
        self.reason = reason


def cache_dir(override: str | Path | None = None) -> Path:
    """snappy's cache root: ``override``, else ``$SNAPPY_CACHE``, else ``~/.cache/snappy``."""
    root = override or os.environ.get("SNAPPY_CACHE") or Path.home() / ".cache" / "snappy"
    return Path(root).expanduser()


def _rapidocr_version() -> str:
    try:
        return metadata.version("rapidocr")
    except metadata.PackageNotFoundError as e:
        raise OcrModelError("rapidocr/models", "the rapidocr package is not installed (it bundles the default models)") from e


def bundled_onnx(model_name: str) -> Path:
    """Path of a bundled ONNX model inside the installed rapidocr wheel."""
    if model_name not in BUNDLED_MODELS:
        raise KeyError(f"no bundled model {model_name!r}; bundled: {sorted(BUNDLED_MODELS)}")
    _rapidocr_version()
    path = Path(str(resources.files("rapidocr") / "models" / BUNDLED_MODELS[model_name]))
    if not path.is_file():
        raise OcrModelError(path.parent, f"{path.name} is missing from the installed rapidocr wheel")
    return path


def onnx_character_list(onnx_path: str | Path) -> list[str]:
    """The recognition character list stored in the ONNX metadata key ``character``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    chars = sess.get_modelmeta().custom_metadata_map.get("character")
    if not chars:
        raise OcrModelError(Path(onnx_path).parent, f"{Path(onnx_path).name} has no 'character' metadata (not a CTC rec model?)")
    return chars.splitlines()


def inference_config(model_name: str, character_dict: list[str] | None = None) -> dict:
    """``inference.yml`` content for a PaddleX det/rec model, as PaddleX's converter writes it."""
    from paddlex.modules.base.utils.pdparams2safetensors.inference_meta import build_inference_meta

    data: dict = {"Global": {"model_name": model_name}}
    data.update(build_inference_meta(model_name))  # PreProcess (DB resize/normalize or CTC resize), PostProcess, Hpi
    if character_dict is not None:
        data.setdefault("PostProcess", {})["character_dict"] = list(character_dict)
    return data


def _write_folder(folder: Path, model_name: str, onnx_src: Path) -> None:
    import yaml

    folder.mkdir(parents=True)
    shutil.copyfile(onnx_src, folder / "inference.onnx")
    chars = onnx_character_list(onnx_src) if model_name.endswith("_rec") else None
    with open(folder / "inference.yml", "w", encoding="utf-8") as f:
        yaml.dump(
            inference_config(model_name, chars), f, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
            allow_unicode=True, sort_keys=False,
        )
    stamp = {"model_name": model_name, "source": str(onnx_src), "size": onnx_src.stat().st_size}
    (folder / _STAMP).write_text(json.dumps(stamp), encoding="utf-8")


def _is_current(folder: Path, onnx_src: Path) -> bool:
    # The stamp is written last inside the temporary folder, which appears by one rename:
    # a folder with a matching stamp and its files present is complete.
    try:
        stamp = json.loads((folder / _STAMP).read_text(encoding="utf-8"))
        return (
            stamp["size"] == onnx_src.stat().st_size == (folder / "inference.onnx").stat().st_size
            and (folder / "inference.yml").stat().st_size > 0
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def provision_bundled_model(model_name: str, cache: str | Path | None = None) -> Path:
    """PaddleOCR model folder for a bundled model, built once in the cache.

    Idempotent and safe with concurrent callers: each builds in a private temporary folder
    and renames it into place; a loser of the race discards its copy and uses the winner's.
    """
    onnx_src = bundled_onnx(model_name)
    folder = cache_dir(cache) / "paddleocr-models" / f"rapidocr-{_rapidocr_version()}" / model_name
    if _is_current(folder, onnx_src):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model_name}.", dir=folder.parent))
    try:
        _write_folder(tmp / "m", model_name, onnx_src)
        if _is_current(folder, onnx_src):  # another process finished first: keep its folder
            return folder
        if folder.exists():  # stale or broken: move aside (atomic), then replace
            stale = Path(tempfile.mkdtemp(prefix=f".{model_name}.stale.", dir=folder.parent))
            try:
                os.replace(folder, stale / "m")
            except OSError:
                pass  # another process moved it first
        try:
            os.rename(tmp / "m", folder)
            log.info("provisioned PaddleOCR model %s in %s", model_name, folder)
        except OSError:
            if not _is_current(folder, onnx_src):  # lost the race to a valid folder: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for stale in folder.parent.glob(f".{model_name}.stale.*"):
            shutil.rmtree(stale, ignore_errors=True)
    return folder


def validate_model_dir(folder: str | Path, model_name: str | None, task: Task, engine: str = "onnxruntime") -> str:
    """Check a PaddleOCR model folder; returns its model name (from ``inference.yml``).

    Raises ``OcrModelError`` naming the folder and everything that is missing or wrong.
    """
    import yaml

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise OcrModelError(folder, "not a directory" if folder.exists() else "does not exist")
    problems: list[str] = []
    if engine == "onnxruntime" and not (folder / "inference.onnx").is_file():
        problems.append("inference.onnx is missing (engine='onnxruntime' needs an ONNX model)")
    cfg: dict = {}
    yml = folder / "inference.yml"
    if not yml.is_file():
        problems.append("inference.yml is missing")
    else:
        try:
            cfg = yaml.load(yml.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            problems.append(f"inference.yml is not valid YAML ({e})")
        if not isinstance(cfg, dict):
            problems.append("inference.yml is not a mapping")
            cfg = {}
    found = (cfg.get("Global") or {}).get("model_name") if yml.is_file() and cfg else None
    if cfg and not found:
        problems.append("inference.yml has no Global.model_name")
    if found and model_name and found != model_name:
        problems.append(f"inference.yml names model {found!r} but {model_name!r} was requested")
    if cfg and task == "rec" and not (cfg.get("PostProcess") or {}).get("character_dict"):
        problems.append("inference.yml has no PostProcess.character_dict (the recognition character list)")
    if problems:
        raise OcrModelError(folder, "; ".join(problems))
    return str(found)


@dataclass(frozen=True)
class ModelChoice:
    """A PaddleOCR model: its name and local folder (None: PaddleX resolves the name itself)."""

    name: str
    folder: Path | None


def resolve_model(
    task: Task,
    name: str | None,
    folder: str | Path | None,
    cache: str | Path | None = None,
    engine: str = "onnxruntime",
) -> ModelChoice:
    """The model to run for ``task`` from a user folder, a model name, or the bundled default."""
    if folder is not None:
        return ModelChoice(validate_model_dir(folder, name, task, engine), Path(folder).expanduser())
    name = name or (DEFAULT_DET_MODEL if task == "det" else DEFAULT_REC_MODEL)
    if name in BUNDLED_MODELS:
        return ModelChoice(name, provision_bundled_model(name, cache))
    return ModelChoice(name, None)
