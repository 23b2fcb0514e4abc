"""A small torch.nn.TransformerEncoder (2 layers, hidden 128, 4 heads, seq 32)
rebuilt by workflows/transformer.py, on the CuPy backend: against torch and the
NumPy backend, with our matmul and layer-norm tactics chosen, and the whole
engine captured into one CUDA graph (no cuBLAS left in it)."""
import numpy as np
import pytest
from gpu_helpers import rel_l2

import engine as rt

torch = pytest.importorskip("torch")
cp = pytest.importorskip("cupy")

SEQ, HIDDEN, HEADS, FF, LAYERS = 32, 128, 4, 512, 2


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(HIDDEN, HEADS, FF, dropout=0.0, activation="gelu",
                                             batch_first=True)
    return torch.nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False).eval()


def build(encoder, backend, fp16, tmp_path):
    from workflows.transformer import import_encoder
    b, net = import_encoder(encoder, SEQ, HIDDEN)
    cfg = b.create_builder_config()
    cfg.backend = backend
    cfg.timing_cache_path = str(tmp_path / f"{backend}_{fp16}.cache")
    if fp16:
        cfg.set_flag(rt.BuilderFlag.FP16)
    return rt.Runtime(backend=backend).deserialize_cuda_engine(b.build_serialized_network(net, cfg))


def assert_epilogues_fused(engine):
    """Per encoder layer the network has 8 matmuls, 9 ElementWise layers (6 linear
    biases, the score scale, 2 residual adds) and the GELU; all of those ride on
    the matmuls' epilogues (engine/passes/fuse_matmul_epilogue.py), so no
    pointwise layer is left next to a matmul, not even as a fused chain."""
    counts = {}
    for info in engine.layers:
        counts[info.type] = counts.get(info.type, 0) + 1
    assert engine.meta["pass_stats"]["matmul_epilogue_fusion"] == 10 * LAYERS
    # qkv_merge: the q, k, v projections of a layer are one matmul (8 - 2 into attention - 2 merged)
    assert (counts.get(rt.LayerType.MATRIX_MULTIPLY), counts.get(rt.LayerType.ATTENTION)) == (4 * LAYERS, LAYERS)
    for kind in (rt.LayerType.ELEMENTWISE, rt.LayerType.ACTIVATION, rt.LayerType.POINTWISE):
        assert counts.get(kind, 0) == 0, counts
    net = engine.network
    mms = [net.get_layer(i) for i in range(net.num_layers)]
    mms = [m for m in mms if m.type == rt.LayerType.MATRIX_MULTIPLY]
    assert sum(m.bias is not None for m in mms) == 4 * LAYERS       # one merged q|k|v bias
    assert sum(m.residual is not None for m in mms) == 2 * LAYERS
    assert sum(m.alpha != 1.0 for m in mms) == 0      # the score scale moved on into the Attention layer
    assert [m.post_activation for m in mms].count(rt.ActivationType.GELU_ERF) == LAYERS


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_encoder_matches_torch_and_is_captured(encoder, fp16, tmp_path):
    x = np.random.default_rng(3).standard_normal((2, SEQ, HIDDEN)).astype(np.float32)
    with torch.no_grad():
        ref = encoder(torch.as_tensor(x)).numpy()
    engine = build(encoder, "cupy", fp16, tmp_path)
    ctx = engine.create_execution_context()
    first = ctx.execute({"tokens": x})["encoded"]          # selects tactics, compiles
    second = ctx.execute({"tokens": x})["encoded"]         # captures (or decides eager)
    third = ctx.execute({"tokens": x})["encoded"]          # replays
    notes = engine.backend.graph_notes
    graphs = list(ctx.__dict__.get("_cuda_graphs", {}).values())
    assert any(not isinstance(g, str) for g in graphs), f"not captured: {graphs} {notes}"

    assert_epilogues_fused(engine)
    kinds = {info.type.name: set() for info in engine.layers}
    for info in engine.layers:
        kinds[info.type.name].add(engine.backend.selected.get(info.name))
    # graph-safe GEMMs of the layer's precision: ours (mm_* / simt), the conv-backed
    # linear-layer ones (wgmma / mma.sync in FP16, 3xTF32 in FP32) or, in FP16, a cuDNN
    # matmul graph (runs on the handle's stream: captured); never cuBLAS
    own = ("matmul.mm_", "matmul.conv.wg_", "matmul.conv.igemm", "matmul.cudnn") if fp16 else \
        ("matmul.simt", "matmul.conv.3xtf32_")
    assert all(k.startswith(own) for k in kinds["MATRIX_MULTIPLY"]), kinds["MATRIX_MULTIPLY"]
    assert kinds["NORMALIZATION"] == {"norm.layernorm_fused"}, kinds["NORMALIZATION"]

    tol = 5e-3 if fp16 else 1e-5
    for y in (first, second, third):
        assert rel_l2(y, ref) <= tol
    np.testing.assert_allclose(third, second, rtol=0, atol=0)

    cpu = build(encoder, "numpy", fp16, tmp_path)
    y_cpu = cpu.create_execution_context().execute({"tokens": x})["encoded"]
    assert rel_l2(third, y_cpu) <= (1e-2 if fp16 else 1e-5)


def test_encoder_other_batch_gets_its_own_graph(encoder, tmp_path):
    engine = build(encoder, "cupy", True, tmp_path)
    ctx = engine.create_execution_context()
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, SEQ, HIDDEN)).astype(np.float32)
        with torch.no_grad():
            ref = encoder(torch.as_tensor(x)).numpy()
        for _ in range(3):
            y = ctx.execute({"tokens": x})["encoded"]
        assert rel_l2(y, ref) <= 5e-3
    graphs = ctx.__dict__.get("_cuda_graphs", {})
    assert len(graphs) == 2 and all(not isinstance(g, str) for g in graphs.values()), \
        engine.backend.graph_notes
