"""TopK and CombinedNMS in a CuPy engine: built, run eagerly and replayed as a CUDA
graph (the NMS loop must not synchronise with the host), equal to the NumPy engine."""
import numpy as np
import pytest

import engine as rt

cp = pytest.importorskip("cupy")


def _network(b):
    net = b.create_network()
    boxes = net.add_input("boxes", rt.float32, (2, 40, 1, 4))
    scores = net.add_input("scores", rt.float32, (2, 40, 5))
    probs = net.add_activation(scores, rt.ActivationType.SIGMOID).get_output(0)
    nms = net.add_combined_nms(boxes, probs, 6, 20, 0.45, 0.3)
    top = net.add_topk(probs, rt.TopKOperation.MAX, 3, 0b100)
    for layer in (nms, top):
        for i in range(layer.num_outputs):
            net.mark_output(layer.get_output(i))
    return net


def _feeds(seed):
    rng = np.random.default_rng(seed)
    lo = rng.uniform(0.0, 0.8, (2, 40, 1, 2))
    boxes = np.concatenate([lo, lo + rng.uniform(0.05, 0.3, lo.shape)], -1).astype(np.float32)
    return {"boxes": boxes, "scores": rng.standard_normal((2, 40, 5)).astype(np.float32)}


def test_topk_and_nms_on_cupy_match_numpy():
    b = rt.Builder()
    ref_cfg = b.create_builder_config()
    ref_cfg.backend = "numpy"
    ref_engine = b.build_engine(_network(b), ref_cfg)
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    gpu_engine = b.build_engine(_network(b), cfg)
    ref_ctx, ctx = ref_engine.create_execution_context(), gpu_engine.create_execution_context()
    for seed in (1, 2, 1, 2):                 # eager first, then graph replays per shape
        feeds = _feeds(seed)
        ref, got = ref_ctx.execute(feeds), ctx.execute(feeds)
        assert set(ref) == set(got)
        for name in ref:
            g = cp.asnumpy(got[name]) if isinstance(got[name], cp.ndarray) else got[name]
            assert g.dtype == ref[name].dtype, name
            np.testing.assert_allclose(g, ref[name], rtol=1e-6, atol=1e-7, err_msg=name)
