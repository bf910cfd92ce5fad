"""Server paths are readable only under the data roots, as regular files or folders."""

import os

import pytest

from libs.dataroots import DataRoots
from libs.settings import DataSettings


@pytest.fixture
def roots(tmp_path) -> DataRoots:
    (tmp_path / "data" / "corpus").mkdir(parents=True)
    (tmp_path / "data" / "corpus" / "a.txt").write_text("text")
    (tmp_path / "outside.txt").write_text("secret")
    return DataRoots(DataSettings(roots=[str(tmp_path / "data")], max_file_bytes=10))


def test_files_and_folders_inside_a_root_resolve_to_their_real_path(roots, tmp_path):
    assert roots.resolve(str(tmp_path / "data" / "corpus" / "a.txt"), "f") == (tmp_path / "data" / "corpus" / "a.txt").resolve()
    assert roots.resolve(str(tmp_path / "data" / "corpus"), "f") == (tmp_path / "data" / "corpus").resolve()


@pytest.mark.parametrize("name", ["outside", "dotdot", "link-out", "fifo", "missing", "too-big", "relative", "folder-as-file", "nul"])
def test_everything_else_is_refused_with_the_same_message(roots, tmp_path, name):
    data = tmp_path / "data"
    (data / "link-out").symlink_to(tmp_path / "outside.txt")
    os.mkfifo(data / "fifo")
    (data / "big.txt").write_text("x" * 11)
    paths = {
        "outside": str(tmp_path / "outside.txt"),
        "dotdot": str(data / ".." / "outside.txt"),
        "link-out": str(data / "link-out"),
        "fifo": str(data / "fifo"),
        "missing": str(data / "missing.txt"),
        "too-big": str(data / "big.txt"),
        "relative": "data/corpus/a.txt",
        "folder-as-file": str(data / "corpus"),
        "nul": str(data / "corpus" / "a.txt\x00"),
    }
    with pytest.raises(ValueError) as refused:
        roots.resolve(paths[name], "dataset_path", folders=name != "folder-as-file")
    allowed = "a regular file" if name == "folder-as-file" else "a regular file or folder"
    assert str(refused.value) == f"dataset_path is not {allowed} under the data roots this service may read (at most 10 bytes per file)"


def test_no_roots_refuse_every_path(tmp_path):
    with pytest.raises(ValueError):
        DataRoots(DataSettings()).resolve(str(tmp_path), "corpus_path")
