"""The generated stubs are build output of protos/: regenerating them changes nothing."""

import filecmp
from pathlib import Path

from libs.protogen import generate, proto_files

GEN = Path(__file__).resolve().parents[1] / "gen"


def test_generated_stubs_match_the_protos(tmp_path):
    generate(tmp_path)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.suffix in (".py", ".pyi"))
    built = sorted(p.relative_to(GEN) for p in GEN.rglob("*") if p.suffix in (".py", ".pyi"))
    assert fresh == built, "stubs are missing or extra: run `make stubs`"
    stale = [str(p) for p in fresh if not filecmp.cmp(tmp_path / p, GEN / p, shallow=False)]
    assert not stale, f"stale stubs {stale}: run `make stubs`"


def test_every_proto_declares_the_versioned_package():
    for proto in proto_files():
        assert "package embedforge.v1;" in proto.read_text(), proto
