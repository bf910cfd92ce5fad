"""Files, and README sections between markers, generated from the code: written, or checked
(``--check``, exit 1 when stale) by tests so the docs cannot drift from the code."""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def between_markers(text: str, begin: str, end: str, body: str) -> str:
    """``text`` with what lies between the ``begin`` and ``end`` lines replaced by ``body``."""
    if begin not in text or end not in text:
        raise ValueError(f"markers missing: {begin} ... {end}")
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    return f"{head}{begin}\n{body}{end}{tail}"


def write_or_check(description: str, wanted: Callable[[], dict[Path, str]], command: str) -> int:
    """The generator's command line: write every file of ``wanted()``, or with --check report the stale ones."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file or section is stale")
    args = parser.parse_args()
    try:
        files = wanted()
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.check:
        stale = [str(path) for path, text in files.items() if not path.is_file() or path.read_text(encoding="utf-8") != text]
        if stale:
            print(f"stale: {', '.join(stale)}; run {command}", file=sys.stderr)
            return 1
        return 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return 0
