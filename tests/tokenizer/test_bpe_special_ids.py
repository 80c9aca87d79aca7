"""Special token ids far after the mergeable tokens (found by tests/fuzz).

The native encoder used to keep one decode-table entry per id up to the
highest special id: a single special token with id 2**31 asked for 64 GiB.
"""

import resource

import pytest

from shardkit.tokenizer import BPETokenizer

pytestmark = pytest.mark.native

BYTES = [bytes([b]) for b in range(256)]


def _max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_high_special_id_costs_no_memory():
    before = _max_rss_kib()
    # With a dense table: 2**27 entries of 32 bytes, 4 GiB.
    tok = BPETokenizer(BYTES, special_tokens={"<x>": 2**27, "<y>": 300})
    assert _max_rss_kib() - before < 512 * 1024
    assert tok.vocab_size == 2**27 + 1
    assert tok._encoder.vocab_size == 2**27 + 1
    assert tok.decode_bytes([2**27, 300, 65, 2**27]) == b"<x><y>A<x>"
    assert tok.decode(tok.encode("a<x>b", allowed_special="all")) == "a<x>b"
    for bad in (256, 299, 301, 2**27 - 1, 2**27 + 1, -1, 2**40):
        with pytest.raises(ValueError, match=f"unknown token id {bad}"):
            tok.decode_bytes([65, bad])


def test_special_id_past_int32_is_a_clear_error():
    # Token ids are int32 in torch (embedding indices), as MAX_VOCAB_SIZE bounds training.
    for bad in (2**31, 2**32 - 1, 2**70):
        with pytest.raises(ValueError, match=r"special_tokens\['<x>'\]: expected an int id from 256 to 2\*\*31 - 1"):
            BPETokenizer(BYTES, special_tokens={"<x>": bad})
    tok = BPETokenizer(BYTES, special_tokens={"<x>": 2**31 - 1})  # the last id that fits
    assert tok.decode_bytes([2**31 - 1]) == b"<x>"
