"""Validation and file formats of ``BPETokenizer``.

* our JSON (``save``/``load``): plain data, never pickle, so loading a file
  cannot run code; every field is checked and a bad file raises ValueError;
  a split pattern other than the built-in ones is refused unless the caller
  passes ``trust_pattern=True``;
* Hugging Face ``tokenizer.json`` (+ ``tokenizer_config.json`` with the chat
  template), for ``tokenizers.Tokenizer`` and ``PreTrainedTokenizerFast``;
* tiktoken's rank format, both ways;
* GPT-2-style ``vocab.json`` + ``merges.txt``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from pathlib import Path

from shardkit.atomic import write_atomic
from shardkit.tokenizer.splitter import PatternTimeoutError

FORMAT_NAME = "shardkit-bpe"
FORMAT_VERSION = 1


# ---- validation ---------------------------------------------------------------


def check_tokens(tokens: Sequence[bytes]) -> list[bytes]:
    """Token bytes by id: non-empty bytes, every single byte present."""
    if isinstance(tokens, (str, bytes)) or not isinstance(tokens, Sequence):
        raise TypeError(f"tokens: expected a sequence of bytes, got {type(tokens).__name__}")
    out = []
    for i, t in enumerate(tokens):
        if not isinstance(t, (bytes, bytearray)) or len(t) == 0:
            raise ValueError(f"tokens[{i}]: expected non-empty bytes, got {t!r}")
        out.append(bytes(t))
    missing = set(range(256)) - {t[0] for t in out if len(t) == 1}
    if missing:
        raise ValueError(f"tokens: no token for the single bytes {sorted(missing)[:8]}... (all 256 are needed)")
    return out


def check_special_names(names: Sequence[str]) -> None:
    if isinstance(names, (str, bytes)):
        raise TypeError("special_tokens: expected a list of str, got a single string")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise ValueError(f"special_tokens[{i}]: expected a non-empty str, got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"special_tokens: duplicates in {list(names)}")


#: Every token id fits int32, torch's embedding index (as MAX_VOCAB_SIZE in training).
MAX_TOKEN_ID = 1 << 31


def check_special_tokens(special: dict[str, int], tokens: list[bytes]) -> dict[str, int]:
    """Special tokens: ids after the mergeable tokens, none spelling a learned token."""
    if not isinstance(special, dict):
        raise TypeError(f"special_tokens: expected a dict name -> id, got {type(special).__name__}")
    check_special_names(list(special))
    by_bytes = {t: i for i, t in reversed(list(enumerate(tokens)))}
    seen: dict[int, str] = {}
    for name, i in special.items():
        if not isinstance(i, int) or isinstance(i, bool) or not len(tokens) <= i < MAX_TOKEN_ID:
            raise ValueError(f"special_tokens[{name!r}]: expected an int id from {len(tokens)} to 2**31 - 1 "
                             f"(ids are int32 in torch), got {i!r}")
        if i in seen:
            raise ValueError(f"special_tokens: {name!r} and {seen[i]!r} share the id {i}")
        seen[i] = name
        learned = by_bytes.get(name.encode("utf-8"))
        if learned is not None:
            raise ValueError(f"special token {name!r} collides with the learned token {learned} (same bytes)")
    return dict(special)


def check_merges(merges: Sequence, tokens: list[bytes]) -> list[tuple[int, int]]:
    """One (left, right) per multi-byte token, in id order, spelling that token."""
    multi = [i for i, t in enumerate(tokens) if len(t) > 1]
    merges = [tuple(m) for m in merges]
    if len(merges) != len(multi):
        raise ValueError(f"merges: expected {len(multi)} pairs (one per multi-byte token), got {len(merges)}")
    n = len(tokens)
    for k, (pair, target) in enumerate(zip(merges, multi)):
        ok = len(pair) == 2 and all(isinstance(x, int) and 0 <= x < n for x in pair)
        if not ok or tokens[pair[0]] + tokens[pair[1]] != tokens[target]:
            raise ValueError(f"merges[{k}]: {pair!r} does not spell token {target} ({tokens[target]!r})")
    return merges


def merges_from_ranks(tokens: list[bytes]) -> list[tuple[int, int]]:
    """Recover each multi-byte token's merge from ranks alone.

    Byte-pair merging a token's bytes with only the lower ranks must stop at
    exactly two parts: those are the pair (as HF's tiktoken converter does).
    """
    ranks: dict[bytes, int] = {}
    for i, t in enumerate(tokens):
        ranks.setdefault(t, i)
    merges = []
    for i, token in enumerate(tokens):
        if len(token) < 2:
            continue
        parts = [token[j : j + 1] for j in range(len(token))]
        while True:
            best, at = None, -1
            for j in range(len(parts) - 1):
                r = ranks.get(parts[j] + parts[j + 1])
                if r is not None and r < i and (best is None or r < best):
                    best, at = r, j
            if best is None:
                break
            parts[at : at + 2] = [parts[at] + parts[at + 1]]
        if len(parts) != 2:
            raise ValueError(f"token {i} ({token!r}) is not the merge of two lower-ranked tokens")
        merges.append((ranks[parts[0]], ranks[parts[1]]))
    return merges


# ---- our JSON ---------------------------------------------------------------


def save_json(tok, path) -> None:
    tokens = tok._tokens
    trained_layout = all(tokens[b] == bytes([b]) for b in range(256)) and all(len(t) > 1 for t in tokens[256:])
    doc = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "pattern": tok.pattern,
        "special_tokens": tok.special_tokens,
        "chat_template": {
            "start": tok.chat_template.start,
            "end": tok.chat_template.end,
            "roles": list(tok.chat_template.roles),
            "trained_role": tok.chat_template.trained_role,
        },
    }
    if trained_layout and tok._merges is not None:
        # Ids 0-255 are the bytes and merge k is id 256 + k: the merges say it all.
        doc["merges"] = [list(m) for m in tok._merges]
    else:
        doc["tokens"] = [base64.b64encode(t).decode("ascii") for t in tokens]
        if tok._merges is not None:
            doc["merges"] = [list(m) for m in tok._merges]
    write_atomic(path, json.dumps(doc, ensure_ascii=False).encode("utf-8"))


def _field(doc: dict, key: str, kind, path) -> object:
    if key not in doc or not isinstance(doc[key], kind):
        raise ValueError(f"corrupted tokenizer file {str(path)!r}: field {key!r} missing or not {kind}")
    return doc[key]


def parse_json(raw: bytes, what: str):
    """``json.loads`` of untrusted bytes; every failure is a ValueError starting with ``what``.

    Deep nesting ("[[[[..." many thousand times) makes the json module raise
    RecursionError, which callers do not expect from a bad file.
    """
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # bad UTF-8, bad JSON, or an integer of more than 4300 digits
        raise ValueError(f"{what}: not JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"{what}: JSON nested too deeply to read") from None


def load_json(cls, path, trust_pattern: bool = False):
    from shardkit.tokenizer.chat import ChatTemplate
    from shardkit.tokenizer.patterns import is_builtin_pattern
    from shardkit.tokenizer.reference import tokens_from_merges

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise OSError(f"cannot read tokenizer file {str(path)!r}: {exc.strerror}") from exc
    doc = parse_json(raw, f"corrupted tokenizer file {str(path)!r}")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise ValueError(f"corrupted tokenizer file {str(path)!r}: not a {FORMAT_NAME} file")
    if doc.get("version") != FORMAT_VERSION:
        raise ValueError(f"tokenizer file {str(path)!r}: unsupported version {doc.get('version')!r}")
    pattern = _field(doc, "pattern", str, path)
    if not trust_pattern and not is_builtin_pattern(pattern):
        shown = pattern if len(pattern) <= 80 else pattern[:77] + "..."
        raise ValueError(
            f"tokenizer file {str(path)!r}: its split pattern {shown!r} is not a built-in one (gpt4, gpt2, o200k). "
            f"A custom pattern is a regex run on every text you encode; load it only from a file you trust, "
            f"with trust_pattern=True"
        )
    special = _field(doc, "special_tokens", dict, path)
    merges = doc.get("merges")
    if merges is not None and not (
        isinstance(merges, list)
        and all(isinstance(m, list) and len(m) == 2 and all(type(x) is int for x in m) for m in merges)
    ):
        raise ValueError(f"corrupted tokenizer file {str(path)!r}: 'merges' must be a list of [int, int]")
    try:
        if "tokens" in doc:
            encoded = _field(doc, "tokens", list, path)
            tokens = [base64.b64decode(t.encode("ascii"), validate=True) for t in encoded]
        else:
            if merges is None:
                raise ValueError("neither 'tokens' nor 'merges'")
            for k, (a, b) in enumerate(merges):
                if not (0 <= a < 256 + k and 0 <= b < 256 + k):
                    raise ValueError(f"merges[{k}] refers to a later id")
            tokens = tokens_from_merges([tuple(m) for m in merges])
        chat = doc.get("chat_template") or {}
        template = ChatTemplate(
            start=chat.get("start", "<|im_start|>"),
            end=chat.get("end", "<|im_end|>"),
            roles=tuple(chat.get("roles", ("system", "user", "assistant"))),
            trained_role=chat.get("trained_role", "assistant"),
        )
        return cls(tokens, pattern=pattern, special_tokens=special, merges=merges, chat_template=template)
    except PatternTimeoutError as exc:
        # The pattern's load-time check backtracked past its limit: say which file holds it.
        raise PatternTimeoutError(f"tokenizer file {str(path)!r}: {exc}") from None
    except (ValueError, TypeError, AttributeError, binascii.Error) as exc:
        raise ValueError(f"corrupted tokenizer file {str(path)!r}: {exc}") from None


# ---- GPT-2 byte-to-unicode mapping ---------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (used by HF byte-level BPE)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _to_unicode(data: bytes, table: dict[int, str]) -> str:
    return "".join(table[b] for b in data)


# ---- Hugging Face ---------------------------------------------------------------


def hf_tokenizer_json(tok) -> dict:
    table = bytes_to_unicode()
    vocab: dict[str, int] = {}
    for i, t in enumerate(tok._tokens):
        vocab.setdefault(_to_unicode(t, table), i)
    merges = [[_to_unicode(tok._tokens[a], table), _to_unicode(tok._tokens[b], table)] for a, b in tok.merges]
    added = [
        {"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True}
        for name, i in sorted(tok.special_tokens.items(), key=lambda kv: kv[1])
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": tok.pattern}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            # Whole-chunk lookup first, as tiktoken and our encoder do.
            "ignore_merges": True,
            "vocab": vocab,
            "merges": merges,
        },
    }


def save_hf(tok, directory) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / "tokenizer.json", json.dumps(hf_tokenizer_json(tok), ensure_ascii=False).encode())
    specials = tok.special_tokens
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
    template = tok.chat_template
    if template.start in specials and template.end in specials:
        config["chat_template"] = template.jinja
        config["eos_token"] = template.end
    if "<|endoftext|>" in specials:
        config["bos_token"] = "<|endoftext|>"
        config["pad_token"] = "<|endoftext|>"
    write_atomic(directory / "tokenizer_config.json", json.dumps(config, ensure_ascii=False, indent=1).encode())


# ---- tiktoken -------------------------------------------------------------------


def to_tiktoken(tok, name: str):
    import tiktoken

    ranks: dict[bytes, int] = {}
    for i, t in enumerate(tok._tokens):
        ranks.setdefault(t, i)
    return tiktoken.Encoding(name=name, pat_str=tok.pattern, mergeable_ranks=ranks, special_tokens=tok.special_tokens)


def from_tiktoken(cls, encoding):
    ranks = getattr(encoding, "_mergeable_ranks", None)
    pattern = getattr(encoding, "_pat_str", None)
    specials = getattr(encoding, "_special_tokens", None)
    if not isinstance(ranks, dict) or not isinstance(pattern, str) or not isinstance(specials, dict):
        raise TypeError(f"encoding: expected a tiktoken.Encoding, got {type(encoding).__name__}")
    tokens: list[bytes | None] = [None] * len(ranks)
    for t, r in ranks.items():
        if not (isinstance(r, int) and 0 <= r < len(ranks)) or tokens[r] is not None:
            raise ValueError(f"encoding: ranks must be 0..{len(ranks) - 1} without gaps, got {r!r} for {t!r}")
        tokens[r] = t
    return cls(tokens, pattern=pattern, special_tokens=dict(specials))


# ---- GPT-2 files ----------------------------------------------------------------


def load_gpt2_files(cls, vocab_json, merges_txt, pattern: str):
    table = {c: b for b, c in bytes_to_unicode().items()}
    vocab = parse_json(Path(vocab_json).read_bytes(), f"vocab_json {str(vocab_json)!r}")
    try:
        lines = Path(merges_txt).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"merges_txt {str(merges_txt)!r}: not UTF-8 ({exc})") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise ValueError("vocab_json: expected a JSON object of token -> int id")
    pairs = [line.split(" ") for line in lines if line and not line.startswith("#version")]
    if any(len(p) != 2 for p in pairs):
        raise ValueError("merges_txt: expected lines of two space-separated tokens")

    def to_bytes(s: str) -> bytes | None:
        try:
            return bytes(table[c] for c in s)
        except KeyError:
            return None

    num_mergeable = 256 + len(pairs)
    tokens: list[bytes | None] = [None] * num_mergeable
    specials: dict[str, int] = {}
    for s, i in vocab.items():
        if 0 <= i < num_mergeable:
            if tokens[i] is not None:
                raise ValueError(f"vocab_json: id {i} given twice")
            b = to_bytes(s)
            if b is None:
                raise ValueError(f"vocab_json: token {s!r} (id {i}) is not byte-level")
            tokens[i] = b
        else:
            specials[s] = i
    if any(t is None for t in tokens):
        raise ValueError(f"vocab_json: ids 0..{num_mergeable - 1} must all be present (256 bytes + one per merge)")
    index = {t: i for i, t in enumerate(tokens)}
    merges = []
    for k, (a, b) in enumerate(pairs):
        ba, bb = to_bytes(a), to_bytes(b)
        if ba not in index or bb not in index:
            raise ValueError(f"merges_txt: line {k + 1} ({a} {b}) uses a token not in vocab_json")
        merges.append((index[ba], index[bb]))
    return cls(tokens, pattern=pattern, special_tokens=specials, merges=merges)
