"""Every benchmark suite, declared in one place. ``python -m benchmarks run SUITE`` runs one.

A suite is a function ``(args) -> (rows, builds)``: rows ``{system, model, precision,
batch, ms, ...}`` with ``system`` one of ``cupyrt``, ``torch.eager``, ``torch.compile``,
``torch.compile.reduce-overhead``, all timed in this one process on this one card.
"""
import dataclasses
import logging
import os

from . import models
from .models import torch_rows

log = logging.getLogger("benchmarks")
HERE = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    what: str
    run: object
    batches: tuple = ()
    precisions: tuple = ()


def _vision(model, default_precisions):
    def run(args):
        precisions = args.precisions.split(",") if args.precisions else default_precisions
        rows, builds = [], []
        torch_module = models.torch_model(model)
        for precision in precisions:
            record, ours = models.engine_rows(model, torch_module, precision, args.batches, args.reps,
                                              args.out, profile=args.profile)
            builds.append(record)
            rows += ours
            peer_precision = "fp16" if precision == "int8" else precision
            peers = torch_rows(models.torch_peer(model, peer_precision),
                               lambda n: models.torch_input(n, peer_precision), model, peer_precision,
                               args.batches, args.reps)
            rows += peers
        return rows, builds
    return run


def _bert(args):
    rows, builds = [], []
    for precision in (args.precisions.split(",") if args.precisions else ("fp16",)):
        record, ours, tmodel, make_input = models.bert_rows(precision, args.batches, args.reps)
        builds.append(record)
        rows += ours + torch_rows(tmodel, make_input, "bert_base_encoder", precision, args.batches, args.reps)
    return rows, builds


KERNEL_LAYERS = ("stem7x7", "s1_3x3_64", "s2_1x1_128_512", "s3_3x3_256", "s3_1x1_1024_256", "s4_3x3_512")


def _kernels(args):
    """One ResNet-50 convolution (+ bias + ReLU) per engine, FP16, NHWC: the tactic the
    builder picks (ours or cuDNN's graph) against PyTorch's conv + ReLU on the same shape."""
    import numpy as np
    import torch

    import engine as rt
    from .layers import RESNET50
    wanted = None if args.layers == "all" else set((args.layers or ",".join(KERNEL_LAYERS)).split(","))
    rows, builds = [], []
    for name, h, c, k, r, stride, _count in RESNET50:
        if wanted is not None and name not in wanted:
            continue
        rng = np.random.default_rng(len(name))
        w = (rng.standard_normal((k, c, r, r)) / np.sqrt(c * r * r)).astype(np.float32)
        bias = rng.standard_normal(k).astype(np.float32)
        for n in args.batches:
            net = rt.Network()
            x = net.add_input("x", rt.float32, (n, c, h, h))
            conv = net.add_convolution_nd(x, k, (r, r), kernel=w, bias=bias)
            conv.stride_nd, conv.padding_nd = (stride, stride), (r // 2, r // 2)
            y = net.add_activation(conv.get_output(0), rt.ActivationType.RELU).get_output(0)
            net.mark_output(y)
            cfg = rt.Builder().create_builder_config()
            cfg.backend = "cupy"
            cfg.set_flag(rt.BuilderFlag.FP16)
            eng = rt.Runtime(backend="cupy").deserialize_cuda_engine(
                rt.Builder().build_serialized_network(net, cfg))
            import cupy as cp
            p = (h + 2 * (r // 2) - r) // stride + 1
            xd = cp.asarray(rng.standard_normal((n, c, h, h)).astype(np.float32))
            yd = cp.full((n, k, p, p), cp.nan, cp.float32)
            ctx = eng.create_execution_context()
            ctx.set_tensor_address("x", xd)
            ctx.set_tensor_address(y.name, yd)
            stream = cp.cuda.get_current_stream()
            ctx.execute_async_v3(stream)
            layer = eng.network.get_layer(0).name
            ms = models.median_ms(lambda: ctx.execute_async_v3(stream), cp, reps=args.reps)
            rows.append({"system": "cupyrt", "model": f"resnet50.{name}", "precision": "fp16", "batch": n,
                         "ms": ms, "tactic": eng.backend.selected.get(layer),
                         "tactic_ms": eng.meta.get("tactic_ms", {}).get(layer)})
            module = torch.nn.Sequential(torch.nn.Conv2d(c, k, r, stride, r // 2), torch.nn.ReLU())
            module = module.cuda().half().to(memory_format=torch.channels_last).eval()
            rows += torch_rows(module, lambda m: torch.randn(m, c, h, h, device="cuda").half().to(
                memory_format=torch.channels_last), f"resnet50.{name}", "fp16", [n], args.reps)
    return rows, builds


def _tf_path(args):
    """The TensorFlow path (carry benchmarks/tf_path, made by ``python benchmarks/tf_path.py
    prepare`` where TensorFlow is): exported Keras engines built and checked against TF's
    outputs. No PyTorch peer exists for these Keras models; the rows carry accuracy, not a ratio."""
    from . import tf_path as tf_run
    folder = args.tf_dir or os.path.join(HERE, "tf_path")
    rows = []
    for sub in tf_run.model_folders(folder):
        for r in tf_run.run(sub, backend="cupy", precisions=("FP32", "FP16"), reps=args.reps):
            rows.append({"system": "cupyrt", "model": f"{r['model']}.{r['engine']}.{r['output']}",
                         "precision": r["precision"].lower(), "batch": r["shape"][0] if r["shape"] else 1,
                         "ms": r["execute_ms"], **{k: r[k] for k in ("rel_l2", "ok", "top1_agree", "accuracy",
                                                                      "build_seconds")}})
    return rows, []


SUITES = {s.name: s for s in [
    Suite("resnet50", "torchvision ResNet-50 FP16 (dynamic-batch engine)", _vision("resnet50", ("fp16",)),
          batches=(1, 32, 256), precisions=("fp16",)),
    Suite("mobilenet_v2", "torchvision MobileNetV2 FP16", _vision("mobilenet_v2", ("fp16",)),
          batches=(256,), precisions=("fp16",)),
    Suite("int8", "ResNet-50 INT8 (EntropyCalibrator2), PyTorch peers in FP16", _vision("resnet50", ("int8",)),
          batches=(256,), precisions=("int8",)),
    Suite("bert", "BERT-base-sized encoder (12 x 768, 12 heads, seq 128)", _bert,
          batches=(1, 32), precisions=("fp16",)),
    Suite("kernels", "single ResNet-50 convolutions + bias + ReLU, FP16 NHWC", _kernels,
          batches=(256,), precisions=("fp16",)),
    Suite("tf_path", "Keras models through the TF converter, checked against TF (no PyTorch peer)",
          _tf_path, batches=(), precisions=("fp32", "fp16")),
]}
