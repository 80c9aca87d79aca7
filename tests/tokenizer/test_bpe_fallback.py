"""Without the native core (SHARDKIT_DISABLE_NATIVE=1) the pure-Python reference does the work."""

import json
import os
import subprocess
import sys

import pytest

from shardkit.tokenizer import BPETokenizer

SCRIPT = r"""
import json, sys
import shardkit
from shardkit.tokenizer import BPETokenizer
assert not shardkit.HAS_NATIVE
docs = json.loads(sys.stdin.read())
tok = BPETokenizer.train_from_iterator(docs, 280, special_tokens=["<|end|>"])
ids = [tok.encode(d + "<|end|>", allowed_special="all") for d in docs]
print(json.dumps({"tokens": [t.hex() for t in tok.tokens], "ids": ids,
                  "round_trip": all(tok.decode(i) == d + "<|end|>" for i, d in zip(ids, docs))}))
"""


@pytest.mark.native
def test_reference_fallback_equals_native(english_docs):
    docs = english_docs[:15]
    env = {**os.environ, "SHARDKIT_DISABLE_NATIVE": "1", "SHARDKIT_REQUIRE_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], input=json.dumps(docs), capture_output=True, text=True,
                         env=env, check=True)
    fallback = json.loads(out.stdout)
    native = BPETokenizer.train_from_iterator(docs, 280, special_tokens=["<|end|>"])
    assert [bytes.fromhex(t) for t in fallback["tokens"]] == native.tokens
    assert fallback["ids"] == [native.encode(d + "<|end|>", allowed_special="all") for d in docs]
    assert fallback["round_trip"]
