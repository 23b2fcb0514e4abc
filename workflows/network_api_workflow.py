"""A model from a framework we do not import, rebuilt layer by layer with the engine API.

    python -m workflows.network_api_workflow [--weights lenet.npz] [--epochs 30]
                                             [--precision FP32|FP16] [--plan lenet.plan]

The TensorRT sample "network_api_pytorch_mnist", without PyTorch: the model
comes to us only as an .npz of named weights (what any framework can write).
Here a LeNet-style network (two 3x3 convolutions with ReLU and 2x2 average
pooling, two fully connected layers, softmax) is trained on scikit-learn's
8x8 digits by the plain NumPy code below (forward, backward, Adam: seconds)
and its weights written to the .npz; with --weights pointing at an existing
file that file is used instead. Then:

1. the network is defined layer by layer with ``engine``'s TensorRT-like API
   (add_input, add_convolution_nd, add_activation, add_pooling_nd,
   add_fully_connected, add_softmax, add_shuffle), each weight read from the
   .npz by name;
2. built and serialised into a plan file;
3. the plan is read back with ``Runtime().deserialize_cuda_engine`` and run on
   the held-out digits;
4. its outputs are compared with the NumPy forward pass of the same weights
   (rel. L2 error, top-1 accuracy of both, same prediction).
No TensorFlow anywhere.
"""
import argparse
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np

import engine as rt
from engine.settings import settings
from workflows import run_engines_here

log = logging.getLogger(__name__)

# (name in the .npz, shape): the file format of this "foreign" model
SHAPES = {"conv1.weight": (6, 1, 3, 3), "conv1.bias": (6,),
          "conv2.weight": (16, 6, 3, 3), "conv2.bias": (16,),
          "fc1.weight": (32, 64), "fc1.bias": (32,),
          "fc2.weight": (10, 32), "fc2.bias": (10,)}


class WeightsFileError(ValueError):
    """The .npz does not hold the weights this network needs."""

def digits_nchw(seed=0):
    """sklearn's digits, standardised per pixel, as (n, 1, 8, 8) float32 + labels."""
    # optional dependency: scikit-learn (the digits data set; the [tf] extras)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        d.images.astype(np.float32)[:, None], d.target, test_size=0.25, random_state=seed,
        stratify=d.target)
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1.0
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


# ---------------------------------------------------------------------------- NumPy model

def _im2col(x):
    """(N, C, H, W) -> (N, H, W, C*9): the 3x3 neighbourhoods of a pad-1 convolution."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=2)
    return cols.reshape(n, c * 9, h, w).transpose(0, 2, 3, 1)      # channel-major: (c, i, j)


def _col2im(dcols, shape):
    n, c, h, w = shape
    d = dcols.transpose(0, 3, 1, 2).reshape(n, c, 9, h, w)
    dx = np.zeros((n, c, h + 2, w + 2), dcols.dtype)
    for k in range(9):
        i, j = divmod(k, 3)
        dx[:, :, i:i + h, j:j + w] += d[:, :, k]
    return dx[:, :, 1:-1, 1:-1]


def _conv(x, w, b):
    cols = _im2col(x)
    y = cols @ w.reshape(len(w), -1).T + b
    return y.transpose(0, 3, 1, 2), cols


def _pool(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def forward(params, x, cache=None):
    """The reference forward pass: softmax probabilities (n, 10)."""
    c1, cols1 = _conv(x, params["conv1.weight"], params["conv1.bias"])
    a1 = np.maximum(c1, 0)
    p1 = _pool(a1)                                     # (n, 6, 4, 4)
    c2, cols2 = _conv(p1, params["conv2.weight"], params["conv2.bias"])
    a2 = np.maximum(c2, 0)
    p2 = _pool(a2)                                     # (n, 16, 2, 2)
    flat = p2.reshape(len(x), -1)                      # (c, h, w) order, as FullyConnected
    h = np.maximum(flat @ params["fc1.weight"].T + params["fc1.bias"], 0)
    z = h @ params["fc2.weight"].T + params["fc2.bias"]
    e = np.exp(z - z.max(1, keepdims=True))
    probs = e / e.sum(1, keepdims=True)
    if cache is not None:
        cache.update(x=x, c1=c1, cols1=cols1, p1=p1, c2=c2, cols2=cols2, flat=flat, h=h)
    return probs


def _grads(params, x, y):
    cache = {}
    probs = forward(params, x, cache)
    n = len(x)
    dz = probs.copy()
    dz[np.arange(n), y] -= 1.0
    dz /= n
    g = {"fc2.weight": dz.T @ cache["h"], "fc2.bias": dz.sum(0)}
    dh = (dz @ params["fc2.weight"]) * (cache["h"] > 0)
    g["fc1.weight"], g["fc1.bias"] = dh.T @ cache["flat"], dh.sum(0)
    dp2 = (dh @ params["fc1.weight"]).reshape(n, 16, 2, 2)
    dc2 = np.repeat(np.repeat(dp2, 2, 2), 2, 3) / 4.0 * (cache["c2"] > 0)
    d2 = dc2.transpose(0, 2, 3, 1).reshape(-1, 16)
    g["conv2.weight"] = (d2.T @ cache["cols2"].reshape(-1, 54)).reshape(16, 6, 3, 3)
    g["conv2.bias"] = d2.sum(0)
    dp1 = _col2im((d2 @ params["conv2.weight"].reshape(16, -1)).reshape(n, 4, 4, 54),
                  cache["p1"].shape)
    dc1 = np.repeat(np.repeat(dp1, 2, 2), 2, 3) / 4.0 * (cache["c1"] > 0)
    d1 = dc1.transpose(0, 2, 3, 1).reshape(-1, 6)
    g["conv1.weight"] = (d1.T @ cache["cols1"].reshape(-1, 9)).reshape(6, 1, 3, 3)
    g["conv1.bias"] = d1.sum(0)
    return g


def train_lenet(x, y, epochs=30, batch=32, lr=3e-3, seed=0):
    """Mini-batch Adam on the cross-entropy; He-initialised weights. Returns {name: array}."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in SHAPES.items():
        fan_in = int(np.prod(shape[1:])) if name.endswith("weight") else 1
        params[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
                        if name.endswith("weight") else np.zeros(shape)).astype(np.float32)
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            step += 1
            for k, gk in _grads(params, x[idx], y[idx]).items():
                m[k] = 0.9 * m[k] + 0.1 * gk
                v[k] = 0.999 * v[k] + 0.001 * gk * gk
                mh, vh = m[k] / (1 - 0.9 ** step), v[k] / (1 - 0.999 ** step)
                params[k] = (params[k] - lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
    return params


def read_weights(path):
    """The .npz's arrays, checked against SHAPES (names and shapes) and made float32."""
    with np.load(path) as f:
        found = {k: f[k] for k in f.files}
    missing = sorted(set(SHAPES) - set(found))
    if missing:
        raise WeightsFileError(f"{path} lacks weights {missing}; found {sorted(found)}, expected "
                               f"{sorted(SHAPES)}")
    for name, shape in SHAPES.items():
        if found[name].shape != shape:
            raise WeightsFileError(f"{path}: {name} has shape {found[name].shape}; "
                                   f"expected {shape}")
    return {k: found[k].astype(np.float32) for k in SHAPES}


# ---------------------------------------------------------------------------- the engine

def build_network(params):
    """The LeNet-style network in the engine's API. Returns (builder, network)."""
    builder = rt.Builder()
    net = builder.create_network()
    x = net.add_input("image", rt.float32, (-1, 1, 8, 8))
    t = x
    for i, cin in ((1, 1), (2, 6)):
        w = params[f"conv{i}.weight"]
        conv = net.add_convolution_nd(t, w.shape[0], (3, 3), kernel=w,
                                      bias=params[f"conv{i}.bias"], padding_nd=(1, 1))
        conv.name = f"conv{i}"
        relu = net.add_activation(conv.get_output(0), rt.ActivationType.RELU)
        relu.name = f"relu{i}"
        pool = net.add_pooling_nd(relu.get_output(0), rt.PoolingType.AVERAGE, (2, 2),
                                  stride_nd=(2, 2))
        pool.name = f"pool{i}"
        t = pool.get_output(0)
    # FullyConnected flattens (C, H, W) in that order: the NumPy model's reshape order
    fc1 = net.add_fully_connected(t, 32, params["fc1.weight"], params["fc1.bias"])
    fc1.name = "fc1"
    relu = net.add_activation(fc1.get_output(0), rt.ActivationType.RELU)
    relu.name = "relu3"
    fc2 = net.add_fully_connected(relu.get_output(0), 10, params["fc2.weight"], params["fc2.bias"])
    fc2.name = "fc2"                                              # (N, 10, 1, 1)
    soft = net.add_softmax(fc2.get_output(0))
    soft.axes = 1 << 1                                            # over the 10 classes
    soft.name = "softmax"
    flat = net.add_shuffle(soft.get_output(0))
    flat.reshape_dims = (0, 10)
    flat.name = "probs"
    flat.get_output(0).name = "probs"
    net.mark_output(flat.get_output(0))
    return builder, net


def build_plan(params, precision="FP32"):
    builder, net = build_network(params)
    config = builder.create_builder_config()
    if precision == "FP16":
        config.set_flag(rt.BuilderFlag.FP16)
    return builder.build_serialized_network(net, config), net.num_layers


def run(weights=None, epochs=30, precision="FP32", plan_path=None, seed=0):
    """Weights (trained here or read), network, plan, reload, compare. Returns a dict."""
    x_train, y_train, x_test, y_test = digits_nchw(seed)
    workdir = tempfile.mkdtemp(prefix="cupyrt-network-api-")
    trained_s = None
    if weights is None or not os.path.exists(weights):
        t0 = time.perf_counter()
        params = train_lenet(x_train, y_train, epochs, seed=seed)
        trained_s = time.perf_counter() - t0
        weights = weights or os.path.join(workdir, "lenet.npz")
        np.savez(weights, **params)
    params = read_weights(weights)

    t0 = time.perf_counter()
    plan, n_layers = build_plan(params, precision)
    build_s = time.perf_counter() - t0
    plan_path = plan_path or os.path.join(workdir, "lenet.plan")
    with open(plan_path, "wb") as f:
        f.write(plan)
    with open(plan_path, "rb") as f:                     # what a serving process does
        engine = rt.Runtime().deserialize_cuda_engine(f.read())
    context = engine.create_execution_context()
    t0 = time.perf_counter()
    got = np.asarray(context.execute({"image": x_test})["probs"])
    run_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = forward(params, x_test)
    ref_s = time.perf_counter() - t0
    layers = [json_layer["type"] for json_layer in _layer_infos(engine)]
    return {"weights": weights, "plan": plan_path, "plan_bytes": len(plan),
            "precision": precision, "train_seconds": trained_s, "build_seconds": build_s,
            "network_layers": n_layers, "engine_layers": layers,
            "rel_l2": float(np.linalg.norm(got - ref) / np.linalg.norm(ref)),
            "accuracy_numpy": float((ref.argmax(1) == y_test).mean()),
            "accuracy_engine": float((got.argmax(1) == y_test).mean()),
            "agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
            "engine_seconds": run_s, "numpy_seconds": ref_s, "n_test": len(y_test),
            "probs": got, "reference": ref}


def _layer_infos(engine):
    return json.loads(engine.create_engine_inspector().get_engine_information())["layers"]


def report(r, out=None):
    out = out or sys.stdout        # looked up per call: tests capture it
    if r["train_seconds"] is not None:
        out.write(f"LeNet-style net trained with NumPy on digits in {r['train_seconds']:.1f} s, "
                  f"weights written to {r['weights']}\n")
    else:
        out.write(f"weights read from {r['weights']}\n")
    out.write(f"{r['network_layers']} layers defined with the engine API -> {r['precision']} plan "
              f"of {len(r['engine_layers'])} layers ({', '.join(r['engine_layers'])}), "
              f"{r['plan_bytes']} bytes, built in {r['build_seconds']:.2f} s: {r['plan']}\n"
              f"plan reloaded and run on {r['n_test']} held-out digits (backend "
              f"{settings().backend}, {1e3 * r['engine_seconds']:.1f} ms; "
              f"NumPy forward {1e3 * r['numpy_seconds']:.1f} ms)\n"
              f"  rel L2 vs the NumPy forward pass {r['rel_l2']:.2e}; top-1 NumPy "
              f"{100 * r['accuracy_numpy']:.1f}%, engine {100 * r['accuracy_engine']:.1f}%; same "
              f"prediction on {100 * r['agreement']:.1f}%\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", help=".npz of the weights (names as in SHAPES); trained with "
                                     "NumPy and written there when the file does not exist")
    p.add_argument("--epochs", type=int, default=30, help="NumPy training epochs")
    p.add_argument("--precision", default="FP32", choices=["FP32", "FP16"])
    p.add_argument("--plan", help="where to write the plan file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_engines_here()
    r = run(args.weights, args.epochs, args.precision, args.plan)
    report(r)
    return r


if __name__ == "__main__":
    main()
