"""TopK and CombinedNMS layers against plain-Python loops written independently of
kernels/selection.py and kernels/detection.py (the converters' tests compare the
same layers with TensorFlow), their shape rules, errors and the built engine."""
import numpy as np
import pytest

import engine as rt
from engine.testing import interpret

ERR = rt.NetworkDefinitionError
MAX, MIN = rt.TopKOperation.MAX, rt.TopKOperation.MIN


def outputs(net, layer, feeds):
    for i in range(layer.num_outputs):
        net.mark_output(layer.get_output(i))
    got = interpret(net, feeds)
    return [got[layer.get_output(i).name] for i in range(layer.num_outputs)]


# ---------------------------------------------------------------------------- topk

def topk_loop(x, k, axis, largest):
    """Per line along ``axis``: sort (value, index) pairs, best value first, lower index first."""
    xm = np.moveaxis(x, axis, -1)
    vals, idx = np.empty(xm.shape[:-1] + (k,), x.dtype), np.empty(xm.shape[:-1] + (k,), np.int32)
    for pos in np.ndindex(xm.shape[:-1]):
        line = [(float(v), i) for i, v in enumerate(xm[pos])]
        line.sort(key=lambda p: (-p[0] if largest else p[0], p[1]))
        vals[pos] = [v for v, _ in line[:k]]
        idx[pos] = [i for _, i in line[:k]]
    return np.moveaxis(vals, -1, axis), np.moveaxis(idx, -1, axis)


@pytest.mark.parametrize("op,shape,k,axis,ints", [
    (MAX, (2, 7, 3), 3, 1, False), (MIN, (4, 6), 6, 1, False), (MAX, (5, 2, 4), 1, 0, False),
    (MAX, (3, 12), 5, 1, True), (MIN, (2, 3, 10), 4, 2, True)])
def test_topk_matches_a_sorting_loop(op, shape, k, axis, ints):
    rng = np.random.default_rng(sum(shape) + k)
    x = (rng.integers(-2, 3, shape).astype(np.int32) if ints
         else rng.standard_normal(shape).astype(np.float32))
    net = rt.Network()
    t = net.add_input("x", rt.int32 if ints else rt.float32, shape)
    layer = net.add_topk(t, op, k, 1 << axis)
    assert layer.type == rt.LayerType.TOPK
    vals, idx = outputs(net, layer, {"x": x})
    ref_v, ref_i = topk_loop(x, k, axis, op == MAX)
    np.testing.assert_array_equal(vals, ref_v)
    np.testing.assert_array_equal(idx, ref_i)
    assert vals.dtype == x.dtype and idx.dtype == np.int32


def test_topk_shape_rule_and_errors():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 5, 6))
    layer = net.add_topk(x, MAX, 2, 0b100)
    assert layer.get_output(0).shape == (-1, 5, 2) and layer.get_output(1).dtype == rt.int32
    with pytest.raises(ERR, match="k.*at most 5"):
        net.add_topk(x, MAX, 6, 0b010)
    with pytest.raises(ERR, match="exactly one axis"):
        net.add_topk(x, MAX, 1, 0b110)
    with pytest.raises(ERR, match="bitmask"):
        net.add_topk(x, MAX, 1, 0b1000)
    with pytest.raises(ERR, match="an int >= 1"):
        net.add_topk(x, MAX, 0, 0b1)
    b = net.add_input("b", rt.bool, (3, 4))
    with pytest.raises(ERR, match="FLOAT, HALF, INT32"):
        net.add_topk(b, MAX, 1, 0b10)
    before = net.num_layers
    layer.op = "MIN"             # TensorRT names the operation by its enum member
    assert layer.op == MIN and net.num_layers == before


def test_topk_runs_in_a_built_fp16_engine():
    x = np.random.default_rng(3).standard_normal((2, 9)).astype(np.float32)
    b = rt.Builder()
    net = b.create_network()
    t = net.add_input("x", rt.float32, (-1, 9))
    layer = net.add_topk(net.add_activation(t, rt.ActivationType.TANH).get_output(0), MAX, 3, 0b10)
    net.mark_output(layer.get_output(0))
    net.mark_output(layer.get_output(1))
    cfg = b.create_builder_config()
    cfg.set_flag(rt.BuilderFlag.FP16)
    engine = rt.Runtime().deserialize_cuda_engine(b.build_serialized_network(net, cfg))
    got = engine.create_execution_context().execute({"x": x})
    ref_v, ref_i = topk_loop(np.tanh(x), 3, 1, True)
    np.testing.assert_allclose(got[layer.get_output(0).name], ref_v, rtol=2e-3, atol=1e-3)
    assert got[layer.get_output(1).name].dtype == np.int32


# ---------------------------------------------------------------------------- combined nms

def iou(a, b):
    ya0, ya1, xa0, xa1 = min(a[0], a[2]), max(a[0], a[2]), min(a[1], a[3]), max(a[1], a[3])
    yb0, yb1, xb0, xb1 = min(b[0], b[2]), max(b[0], b[2]), min(b[1], b[3]), max(b[1], b[3])
    area_a, area_b = (ya1 - ya0) * (xa1 - xa0), (yb1 - yb0) * (xb1 - xb0)
    if area_a <= 0 or area_b <= 0:
        return 0.0
    inter = max(min(ya1, yb1) - max(ya0, yb0), 0) * max(min(xa1, xb1) - max(xa0, xb0), 0)
    return inter / (area_a + area_b - inter)


def nms_loop(boxes, scores, per_class, total, iou_thr, score_thr, pad, clip):
    """Greedy NMS one (image, class) at a time, as TF's kernel describes it."""
    n, b, q, _ = boxes.shape
    c = scores.shape[2]
    t = min(total, per_class * c) if pad else total
    out_b, out_s = np.zeros((n, t, 4), np.float32), np.zeros((n, t), np.float32)
    out_c, valid = np.zeros((n, t), np.float32), np.zeros(n, np.int32)
    for i in range(n):
        picked = []
        for k in range(c):
            cand = sorted((j for j in range(b) if scores[i, j, k] > score_thr),
                          key=lambda j: (-scores[i, j, k], j))
            kept = []
            for j in cand:
                if len(kept) == per_class:
                    break
                box = boxes[i, j, k if q > 1 else 0]
                if all(iou(box, boxes[i, m, k if q > 1 else 0]) <= iou_thr for m in kept):
                    kept.append(j)
                    picked.append((scores[i, j, k], k, box))
        picked.sort(key=lambda p: -p[0])
        valid[i] = min(len(picked), t)
        for r, (s, k, box) in enumerate(picked[:t]):
            out_b[i, r] = np.clip(box, 0, 1) if clip else box
            out_s[i, r], out_c[i, r] = s, k
    return out_b, out_s, out_c, valid


def random_boxes(rng, shape):
    lo = rng.uniform(-0.2, 1.0, shape[:-1] + (2,))
    return np.concatenate([lo, lo + rng.uniform(-0.1, 0.6, lo.shape)], -1).astype(np.float32)


@pytest.mark.parametrize("q,per_class,total,iou_thr,score_thr,pad,clip", [
    (1, 3, 7, 0.5, 0.2, False, True), (4, 5, 30, 0.3, 0.0, True, False),
    (1, 2, 50, 0.7, 0.5, False, False), (4, 4, 6, 0.0, 0.1, True, True)])
def test_combined_nms_matches_a_greedy_loop(q, per_class, total, iou_thr, score_thr, pad, clip):
    rng = np.random.default_rng(per_class * 10 + total)
    boxes, scores = random_boxes(rng, (2, 18, q, 4)), rng.uniform(0, 1, (2, 18, 4)).astype(np.float32)
    net = rt.Network()
    bt = net.add_input("b", rt.float32, boxes.shape)
    st = net.add_input("s", rt.float32, scores.shape)
    layer = net.add_combined_nms(bt, st, per_class, total, iou_thr, score_thr, pad, clip)
    got = outputs(net, layer, {"b": boxes, "s": scores})
    ref = nms_loop(boxes, scores, per_class, total, iou_thr, score_thr, pad, clip)
    for g, r, name in zip(got, ref, ("boxes", "scores", "classes", "valid")):
        np.testing.assert_array_equal(g, r, err_msg=name)
    assert ref[3].min() > 0           # every image keeps something: not a vacuous case


def test_combined_nms_shape_rule_and_errors():
    net = rt.Network()
    boxes = net.add_input("b", rt.float32, (-1, 10, 1, 4))
    scores = net.add_input("s", rt.float32, (-1, 10, 5))
    layer = net.add_combined_nms(boxes, scores, 3, 20, 0.5, 0.0, pad_per_class=True)
    assert [layer.get_output(i).shape for i in range(4)] == [(-1, 15, 4), (-1, 15), (-1, 15), (-1,)]
    assert layer.get_output(3).dtype == rt.int32
    layer.pad_per_class = False                 # T back to max_total_size
    assert layer.get_output(1).shape == (-1, 20)
    bad = [
        (("b", (2, 10, 1, 3)), ("s", (2, 10, 5)), "boxes", "(batch, num_boxes, q, 4)"),
        (("b", (2, 10, 1, 4)), ("s", (2, 10)), "scores", "(batch, num_boxes, num_classes)"),
        (("b", (2, 10, 1, 4)), ("s", (3, 10, 5)), "scores", "the same batch dim"),
        (("b", (2, 10, 1, 4)), ("s", (2, 9, 5)), "scores", "the same num_boxes dim"),
        (("b", (2, 10, 2, 4)), ("s", (2, 10, 5)), "boxes", "q = 1"),
    ]
    for (bn, bs), (sn, ss), arg, expect in bad:
        n = rt.Network()
        with pytest.raises(ERR, match=arg) as err:
            n.add_combined_nms(n.add_input(bn, rt.float32, bs), n.add_input(sn, rt.float32, ss),
                               2, 4, 0.5, 0.0)
        assert expect in str(err.value)
    n = rt.Network()
    b, s = n.add_input("b", rt.float32, (2, 10, 1, 4)), n.add_input("s", rt.float32, (2, 10, -1))
    with pytest.raises(ERR, match="static number of classes"):
        n.add_combined_nms(b, s, 2, 4, 0.5, 0.0, pad_per_class=True)
    with pytest.raises(ERR, match="a number in"):
        n.add_combined_nms(b, s, 2, 4, 1.5, 0.0)
    i = n.add_input("i", rt.int32, (2, 10, 3))
    with pytest.raises(ERR, match="FLOAT or HALF"):
        n.add_combined_nms(b, i, 2, 4, 0.5, 0.0)
