"""What torch autograd saves for one Llama-style decoder step, term by term.

The terms were read off ``torch.autograd.graph.saved_tensors_hooks`` on
:class:`~shardkit.memory.reference_model.ReferenceDecoder` (torch 2.13, CPU
fused SDPA kernel) and are exact for it; ``tests/memory`` re-checks them.
T = batch * seq tokens, ``a`` = activation bytes (4 fp32, 2 bf16/fp16),
``f`` = 4 bytes for the fp32 statistics the kernels keep whatever the dtype.

Per block, not checkpointed:
  * each of the two RMSNorms: its input and the normalized x upcast to fp32
    (2*T*hidden*f), the fp32 reciprocal RMS (T*f), and its output, which the
    next linear layers save (T*hidden*a);
  * attention: rotated q (T*hidden*a), rotated k and v (2*T*kv_hidden*a), the
    SDPA output (T*hidden*a) and its fp32 log-sum-exp (T*heads*f); the fused
    kernel keeps no seq x seq matrix;
  * SwiGLU: gate, silu(gate), up and their product (4*T*intermediate*a).
Per block, checkpointed: only its input (T*hidden*a); the rest is recomputed.
Outside the blocks: token ids and labels (2*T*8), the final RMSNorm (as
above), the fp32 log-softmax of the logits (T*vocab*4), the largest single
term for big vocabularies, and the loss's fp32 total-weight scalar.

Not modelled: dropout (off in Llama; on CPU each dropout saves its scaled
mask in the activation dtype, T*hidden*a, twice per block, where CUDA's fused
kernel keeps a 1-byte mask), and attention without the fused kernel
("eager"), which adds the softmax probabilities, about 2*T*seq*heads*a.
"""

from __future__ import annotations

from shardkit.memory.spec import DecoderSpec

FP32_BYTES = 4
INDEX_BYTES = 8  # int64 token ids


def rmsnorm_bytes(tokens: int, hidden: int, act_bytes: int) -> int:
    """Input and normalized x kept in fp32, reciprocal RMS, and the output in ``act_bytes``."""
    return 2 * tokens * hidden * FP32_BYTES + tokens * FP32_BYTES + tokens * hidden * act_bytes


def block_terms(spec: DecoderSpec, tokens: int, act_bytes: int) -> dict[str, int]:
    """Bytes autograd saves inside one un-checkpointed block, by part."""
    attention = tokens * (2 * spec.hidden + 2 * spec.kv_hidden) * act_bytes + tokens * spec.heads * FP32_BYTES
    return {
        "norms": 2 * rmsnorm_bytes(tokens, spec.hidden, act_bytes),
        "attention": attention,
        "mlp": 4 * tokens * spec.intermediate * act_bytes,
    }


def block_bytes(spec: DecoderSpec, tokens: int, act_bytes: int) -> int:
    """Bytes saved by one un-checkpointed block."""
    return sum(block_terms(spec, tokens, act_bytes).values())


def checkpointed_block_bytes(spec: DecoderSpec, tokens: int, act_bytes: int) -> int:
    """A checkpointed block keeps only its input, (B, S, hidden)."""
    return tokens * spec.hidden * act_bytes


def head_bytes(spec: DecoderSpec, tokens: int, act_bytes: int) -> int:
    """Token ids, labels, final norm and the fp32 log-softmax over the vocabulary."""
    ids_and_labels = 2 * tokens * INDEX_BYTES
    log_probs = tokens * spec.vocab * FP32_BYTES
    loss_weight = FP32_BYTES  # cross entropy's total-weight scalar
    return ids_and_labels + rmsnorm_bytes(tokens, spec.hidden, act_bytes) + log_probs + loss_weight


def activation_bytes(spec: DecoderSpec, tokens: int, act_bytes: int, checkpointed_blocks: int) -> dict[str, int]:
    """Saved-activation bytes of one forward, split into blocks and head.

    ``checkpointed_blocks`` of the ``spec.layers`` blocks keep only their input.
    """
    if not 0 <= checkpointed_blocks <= spec.layers:
        raise ValueError(f"checkpointed_blocks: expected 0..{spec.layers}, got {checkpointed_blocks}")
    plain = spec.layers - checkpointed_blocks
    return {
        "blocks": plain * block_bytes(spec, tokens, act_bytes),
        "checkpointed_blocks": checkpointed_blocks * checkpointed_block_bytes(spec, tokens, act_bytes),
        "head": head_bytes(spec, tokens, act_bytes),
    }
