"""Saved activations per rank of a ``shardkit.parallel`` GPT: TP, SP and the pipeline's in-flight micro-batches.

The terms were read off ``torch.autograd.graph.saved_tensors_hooks`` on
``shardkit.models.GPT`` laid out by ``shardkit.parallel.parallelize`` (torch
2.13, CPU, gloo), counting each DTensor by its local shard, and are exact for
fp32 (``tests/parallel`` re-checks them per rank at tp=2 and pp=2). Notation:
T tokens of one micro-batch (rows * seq), t = tp, T' = T / t under sequence
parallelism (else T), ``a`` activation bytes, fp32 statistics 4 bytes.

Per block (``GPT`` differs from ``memory.activations``' reference decoder):
  * each RMSNorm, on T' positions: its fp32 input, the fp32 reciprocal RMS and
    the normalized x (T'*h*4 + T'*4 + T'*h*a);
  * the two column-parallel inputs (q/k/v, gate/up) at full length T, with or
    without SP: DTensor all-gathers the sequence before the linear saves it (2*T*h*a);
  * attention on heads / t: rotated q, k and v *after* the GQA repeat (the GPT
    repeats k/v to all local heads before SDPA), the SDPA output, and its fp32
    log-sum-exp: T*4*h/t*a + T*heads/t*4;
  * SwiGLU on intermediate / t columns: 4*T*I/t*a.
Per micro-batch on a stage with blocks: the RoPE cos/sin tables (2*seq*head_dim*a).
Last stage, per micro-batch: the final norm (as above), the head's input
(T*h*a), the fp32 log-softmax over V/t (loss-parallel) or V columns, the
shifted targets (T*8) and two fp32 scalars (total weight, loss scale).
First stage, once per step: the batch's token ids (batch*seq*8; the
micro-batches are views of it).

Pipeline: a non-first stage receives its input into one buffer per
micro-batch that torch's ``PipelineStage`` keeps for its lifetime, and the
first norm saves that buffer; so a finished micro-batch still holds it
(T'*h*a). ``rank_activation_bytes`` replays the rank's order of forwards and
backwards exactly as torch's schedules issue them (GPipe: all forwards first;
1F1B: p - stage warm-up forwards then one backward per forward; interleaved
1F1B: ``_get_warmup_ops`` warm-up of (v-1)*m_round + 2*(p-1-rank) chunks,
local stages in rounds of m_round micro-batches) and returns the peak. For the
busiest rank that is about min(m, p) micro-batches' worth of its layers for
1F1B, all m for GPipe, and p + (p-1)/v for interleaved (Megatron-LM's count).

Zero bubble splits each backward: the input backward (I) frees the loss's
tensors, the deferred weight backward (W) the rest, and W lags I by
``pp_rank`` steps (torch's ``ScheduleInterleavedZeroBubble``), so the later
ranks hold more. Not checked: bf16 (the terms follow the code; only fp32 is
measured).
Activation checkpointing keeps each block's input (T'*h*a) plus the tables.
"""

from __future__ import annotations

from shardkit.memory.spec import DecoderSpec

FP32, INDEX = 4, 8


def _norm(tokens: int, hidden: int, a: int) -> int:
    """fp32 input, fp32 reciprocal RMS and the normalized x the weight multiplies."""
    return tokens * hidden * FP32 + tokens * FP32 + tokens * hidden * a


def block_bytes(spec: DecoderSpec, plan, tokens: int, a: int) -> int:
    """One GPT block of a micro-batch of ``tokens`` tokens on one TP rank."""
    t, h = plan.tp, spec.hidden
    local = tokens // t if t > 1 and plan.sequence_parallel else tokens
    if plan.activation_checkpointing:
        return local * h * a  # the block's input; the rest is recomputed in backward
    norms = 2 * _norm(local, h, a) + 2 * tokens * h * a
    attention = tokens * 4 * (h // t) * a + tokens * (spec.heads // t) * FP32
    mlp = 4 * tokens * (spec.intermediate // t) * a
    return norms + attention + mlp


def head_bytes(spec: DecoderSpec, plan, tokens: int, a: int) -> int:
    """Final norm, head input, log-softmax, targets and the loss's scalars of one micro-batch."""
    t, h = plan.tp, spec.hidden
    local = tokens // t if t > 1 and plan.sequence_parallel else tokens
    return _norm(local, h, a) + tokens * h * a + loss_bytes(spec, plan, tokens)


def loss_bytes(spec: DecoderSpec, plan, tokens: int) -> int:
    """The loss's part of ``head_bytes``: fp32 log-softmax, targets, two scalars (freed by the input backward)."""
    vocab = spec.vocab // plan.tp if plan.tp > 1 and plan.loss_parallel else spec.vocab
    return tokens * vocab * FP32 + tokens * INDEX + 2 * FP32


def _stage_layers(spec: DecoderSpec, plan, stage: int) -> int:
    n, s = spec.layers, plan.num_stages  # shardkit.parallel.pipeline.layer_split
    return (stage + 1) * n // s - stage * n // s


def microbatch_rows(batch: int, microbatches: int) -> list[int]:
    """Rows of each micro-batch, as ``torch.tensor_split`` cuts the batch."""
    return [batch // microbatches + (1 if i < batch % microbatches else 0) for i in range(microbatches)]


def schedule_order(plan, pp_rank: int) -> list[tuple[str, int, int]]:
    """The rank's compute order, as torch issues it: (kind, local stage index, micro-batch).

    Kinds: "F" forward, "B" full backward; the zero-bubble schedule splits the
    backward into "I" (input gradients, sent upstream at once) and "W" (weight
    gradients, deferred).
    """
    m, p, v = plan.microbatches, plan.pp, plan.virtual_stages
    if p == 1:
        return [("F", 0, 0), ("B", 0, 0)]
    if v == 1:
        warm = m if plan.pp_schedule == "gpipe" else min(m, p - pp_rank)
        order = [("F", 0, i) for i in range(warm)]
        for i in range(m):  # then one backward, one forward
            order.append(("B", 0, i))
            if warm + i < m:
                order.append(("F", 0, warm + i))
        return order
    zero_bubble = plan.pp_schedule == "zero_bubble"
    per_round = m // max(1, m // p)
    # torch's _get_warmup_ops: 2 per hop from the last rank (1 for zero bubble), capped at all chunks.
    warm = min((v - 1) * per_round + (1 if zero_bubble else 2) * (p - 1 - pp_rank), m * v)
    count = {"F": [0] * v, "B": [0] * v, "I": [0] * v, "W": [0] * v}
    order, backward_ops = [], []

    def act(kind, local):
        order.append((kind, local, count[kind][local]))
        count[kind][local] += 1

    def backward(op):
        act("I" if zero_bubble else "B", v - 1 - ((op - warm) // per_round) % v)
        backward_ops.append(op)
        # Zero bubble: the weight backwards lag the input backwards by pp_rank (torch's num_1f1b_microbatches).
        if zero_bubble and op - warm >= pp_rank:
            act("W", v - 1 - ((backward_ops[count_w()] - warm) // per_round) % v)

    def count_w():
        return sum(count["W"])

    for op in range(warm):
        act("F", (op // per_round) % v)
    for op in range(warm, m * v):
        act("F", (op // per_round) % v)
        backward(op)
    for op in range(m * v, m * v + warm):
        backward(op)
    while zero_bubble and count_w() < len(backward_ops):
        act("W", v - 1 - ((backward_ops[count_w()] - warm) // per_round) % v)
    return order


def rank_activation_bytes(spec: DecoderSpec, plan, pp_rank: int, *, batch: int, seq_len: int,
                          precision_bytes: int = 4) -> int:
    """Peak saved-activation bytes of pipeline rank ``pp_rank`` during one step (``batch`` rows per replica)."""
    a = precision_bytes
    rows = microbatch_rows(batch, plan.microbatches) if plan.pp > 1 else [batch]
    stages = [pp_rank + k * plan.pp for k in range(plan.virtual_stages)]
    seq_local = seq_len // plan.tp if plan.tp > 1 and plan.sequence_parallel else seq_len
    tables = 2 * seq_len * spec.head_dim * a  # RoPE cos and sin, (1, 1, seq, head_dim) each

    def chunk(stage: int, r: int) -> int:
        tokens = r * seq_len
        total = _stage_layers(spec, plan, stage) * block_bytes(spec, plan, tokens, a) + tables
        if stage == plan.num_stages - 1:
            total += head_bytes(spec, plan, tokens, a)
        return total

    def buffer(stage: int, r: int) -> int:  # the received input that PipelineStage keeps
        return 0 if stage == 0 else r * seq_local * spec.hidden * a

    def loss(stage: int, r: int) -> int:
        return loss_bytes(spec, plan, r * seq_len) if stage == plan.num_stages - 1 else 0

    held = batch * seq_len * INDEX if 0 in stages else 0  # the step's token ids
    peak = held
    for kind, local, mb in schedule_order(plan, pp_rank):
        stage, r = stages[local], rows[mb]
        if kind == "F":
            held += chunk(stage, r)
            peak = max(peak, held)
        elif kind == "B":
            held -= chunk(stage, r) - buffer(stage, r)
        elif kind == "I":  # the loss needs nothing more; the layers keep what their weight gradients need
            held -= loss(stage, r)
        else:  # "W"
            held -= chunk(stage, r) - buffer(stage, r) - loss(stage, r)
    return peak


def activation_bytes(spec: DecoderSpec, plan, *, batch: int, seq_len: int, precision_bytes: int = 4) -> int:
    """Saved-activation bytes on the busiest rank (max over pipeline ranks)."""
    return max(rank_activation_bytes(spec, plan, r, batch=batch, seq_len=seq_len,
                                     precision_bytes=precision_bytes) for r in range(plan.pp))
