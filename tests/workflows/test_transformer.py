"""The BERT-style encoder built through the API matches torch (skips without torch)."""
import numpy as np
import pytest

import engine as rt
from engine.testing import rel_l2

torch = pytest.importorskip("torch")
from workflows.transformer import import_encoder  # noqa: E402


def make_encoder(hidden=32, heads=4, layers=2, ffn=64, activation="gelu", norm_first=False):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(hidden, heads, ffn, dropout=0.0, activation=activation,
                                             batch_first=True, norm_first=norm_first)
    enc = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return enc


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_encoder_matches_torch(activation):
    enc = make_encoder(activation=activation)
    b, net = import_encoder(enc, seq=10, hidden=32)
    engine = b.build_engine(net, b.create_builder_config())
    x = np.random.default_rng(0).standard_normal((3, 10, 32)).astype(np.float32)
    with torch.no_grad():
        ref = enc(torch.from_numpy(x)).numpy()
    got = engine.create_execution_context().execute({"tokens": x})["encoded"]
    assert rel_l2(got, ref) <= 1e-5


def test_pre_norm_layers_are_refused():
    with pytest.raises(rt.CupyrtError, match="post-norm"):
        import_encoder(make_encoder(norm_first=True), seq=4, hidden=32)
