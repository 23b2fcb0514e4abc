"""Activation memory planning: give every intermediate tensor an offset in one
arena so that tensors whose lifetimes do not overlap share bytes.

Greedy by size (largest first), first fit among the offsets free over the
tensor's whole lifetime: the classic heuristic (Pisarchyk & Lee, "Efficient
Memory Management for Deep Neural Net Inference", 2020, "greedy by size").

    time ->   0   1   2   3   4
    t0       [=======]              offset 0
    t1           [===========]      offset |t0|   (overlaps t0)
    t2                   [=======]  offset 0      (t0 is dead by then)
"""
ALIGN = 256


def lifetimes(order_of_layers, inputs_of, outputs_of, keep):
    """tensor -> (first step written, last step read). ``keep`` tensors (network
    inputs/outputs) are not planned: they live in user buffers."""
    span = {}
    for step, layer in enumerate(order_of_layers):
        for t in outputs_of(layer):
            if t not in keep:
                span[t] = [step, step]
        for t in inputs_of(layer):
            if t in span:
                span[t][1] = step
    return {t: tuple(v) for t, v in span.items()}


def plan(sizes, spans):
    """sizes: tensor -> bytes; spans: tensor -> (start, end). Returns
    (offsets: tensor -> byte offset, arena size in bytes)."""
    placed = []       # (offset, size, start, end)
    offsets = {}
    for t in sorted(sizes, key=lambda t: (-sizes[t], spans[t])):
        size = -(-sizes[t] // ALIGN) * ALIGN
        start, end = spans[t]
        busy = sorted((o, o + s) for o, s, a, b in placed if a <= end and start <= b)
        offset = 0
        for lo, hi in busy:
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        placed.append((offset, size, start, end))
        offsets[t] = offset
    total = max((o + s for o, s, _, _ in placed), default=0)
    return offsets, total
