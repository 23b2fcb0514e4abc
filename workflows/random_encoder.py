"""A BERT-style encoder with random weights, in the attribute layout
workflows/transformer.py's import_encoder reads off a torch.nn.TransformerEncoder
(batch_first, post-norm, GELU), so the encoder can be built, tested and timed
where torch is not installed (the GPU machine's engine-only runs, CPU tests).

    enc = random_encoder(hidden=768, heads=12, ff=3072, n_layers=12)
    builder, network = import_encoder(enc, seq=128, hidden=768)
"""
import math
from types import SimpleNamespace

import numpy as np


class Parameter:
    """The part of a torch parameter import_encoder uses: .detach().cpu().float().numpy()."""

    def __init__(self, array):
        self.array = np.asarray(array, np.float32)

    def detach(self):
        return self

    def cpu(self):
        return self

    def float(self):
        return self

    def numpy(self):
        return self.array


def random_encoder(hidden, heads, ff, n_layers, seed=0):
    """Weights scaled as an initialised transformer's (1/sqrt(fan-in)), biases and
    layer-norm parameters away from their trivial values, so every term matters."""
    rng = np.random.default_rng(seed)

    def p(*shape, scale=1.0, offset=0.0):
        return Parameter(offset + scale * rng.standard_normal(shape))

    def linear(out_f, in_f):
        return SimpleNamespace(weight=p(out_f, in_f, scale=1 / math.sqrt(in_f)), bias=p(out_f, scale=0.1))

    def norm():
        return SimpleNamespace(weight=p(hidden, scale=0.1, offset=1.0), bias=p(hidden, scale=0.1), eps=1e-5)

    def layer():
        attn = SimpleNamespace(embed_dim=hidden, num_heads=heads, batch_first=True,
                               in_proj_weight=p(3 * hidden, hidden, scale=1 / math.sqrt(hidden)),
                               in_proj_bias=p(3 * hidden, scale=0.1), out_proj=linear(hidden, hidden))
        return SimpleNamespace(self_attn=attn, norm_first=False, linear1=linear(ff, hidden),
                               linear2=linear(hidden, ff), norm1=norm(), norm2=norm(), activation="gelu")

    return SimpleNamespace(layers=[layer() for _ in range(n_layers)])
