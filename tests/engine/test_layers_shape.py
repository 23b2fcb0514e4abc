"""Shape layers (Shuffle, Flatten, Squeeze, Unsqueeze, Concatenation,
Constant, Slice, Gather) against TensorFlow ops or NumPy loops written
independently of kernels/shape.py."""
import numpy as np
import pytest

import engine as rt
from engine.layers import classes as L
from engine.testing import interpret
from kernels import shape as K

ERR = rt.NetworkDefinitionError


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def rand(shape, seed=0, dtype=np.float32):
    return (np.random.default_rng(seed).standard_normal(shape) * 3 + 0.5).astype(dtype)


def run(build, feeds):
    net = rt.Network()
    ins = [net.add_input(n, rt.DataType.from_numpy(v.dtype), v.shape) for n, v in feeds.items()]
    layer = build(net, *ins)
    net.mark_output(layer.get_output(0))
    out = interpret(net, feeds)[layer.get_output(0).name]
    assert out.shape == layer.get_output(0).shape
    assert out.dtype == layer.get_output(0).dtype.to_numpy()
    return out


def one_input(dtype, shape):
    net = rt.Network()
    return net, net.add_input("x", dtype, shape)


# ----------------------------------------------------------------------------
# shuffle

@pytest.mark.parametrize("first,dims,second,tf_dims", [
    ((0, 2, 3, 1), None, None, None),
    (None, (2, -1), None, (2, 60)),
    (None, (0, 0, 20), None, (2, 3, 20)),
    ((0, 2, 3, 1), (0, -1, 3), None, (2, 20, 3)),
    ((0, 2, 3, 1), (0, 20, 3), (0, 2, 1), (2, 20, 3)),
    (None, (6, 4, 5), (2, 0, 1), (6, 4, 5)),
    (None, (), None, None),
])
def test_shuffle_matches_tensorflow(tf, first, dims, second, tf_dims):
    shape = (2, 3, 4, 5) if dims != () else (1, 1, 1, 1)
    x = rand(shape)

    def build(n, t):
        s = n.add_shuffle(t)
        s.first_transpose, s.reshape_dims, s.second_transpose = first, dims, second
        return s
    ref = tf.constant(x)
    if first is not None:
        ref = tf.transpose(ref, first)
    if dims is not None:
        ref = tf.reshape(ref, tf_dims if tf_dims is not None else ())
    if second is not None:
        ref = tf.transpose(ref, second)
    np.testing.assert_array_equal(run(build, {"x": x}), ref.numpy())


def test_shuffle_zero_is_literal_when_not_placeholder():
    net, x = one_input(rt.float32, (2, 0, 3))
    s = net.add_shuffle(x)
    s.zero_is_placeholder = False
    s.reshape_dims = (0, 7)
    assert s.get_output(0).shape == (0, 7)
    got = run(lambda n, t: _set(n.add_shuffle(t), zero_is_placeholder=False, reshape_dims=(5, 0)),
              {"x": np.zeros((2, 0, 3), np.float32)})
    assert got.shape == (5, 0)


def _set(layer, **attrs):
    for k, v in attrs.items():
        setattr(layer, k, v)
    return layer


def test_shuffle_dynamic_dims_propagate_and_reinfer():
    net, x = one_input(rt.float32, (-1, 3, 4, 5))
    s = net.add_shuffle(x)
    s.first_transpose = (0, 2, 3, 1)
    s.reshape_dims = (0, -1, 3)          # the unknown batch is copied: -1 still infers 20
    assert s.get_output(0).shape == (-1, 20, 3)
    s.reshape_dims = (-1, 60)             # the unknown batch folds into the -1: unknown
    assert s.get_output(0).shape == (-1, 60)
    s.reshape_dims = (0, 60)
    s.second_transpose = (1, 0)
    assert s.get_output(0).shape == (60, -1)
    assert s.infer([(7, 3, 4, 5)], [rt.float32]) == [((60, 7), rt.float32)]


@pytest.mark.parametrize("attrs,expected", [
    (dict(first_transpose=(0, 1, 1)), "first_transpose' is \\(0, 1, 1\\); expected a permutation"),
    (dict(reshape_dims=(-1, -1)), "at most one -1"),
    (dict(reshape_dims=(0, 0, 0, 0)), "0 \\(copy a dim\\) only at indices below the input rank 3"),
    (dict(reshape_dims=(5, 5)), "a shape of the input's volume"),
    (dict(reshape_dims=(5, -1)), "dims whose volume divides"),
    (dict(zero_is_placeholder=False, reshape_dims=(0, -1)), "the -1 cannot be inferred"),
    (dict(reshape_dims=(6, 4), second_transpose=(0, 1, 2)), "second_transpose"),
])
def test_shuffle_rejects(attrs, expected):
    net, x = one_input(rt.float32, (2, 3, 4))
    s = net.add_shuffle(x)
    with pytest.raises(ERR, match=expected):
        for k, v in attrs.items():
            setattr(s, k, v)
    assert s.get_output(0).shape in ((2, 3, 4), (6, 4))   # rolled back


# ----------------------------------------------------------------------------
# flatten, squeeze, unsqueeze

@pytest.mark.parametrize("axis", [0, 1, 2, 3, 4, -1, -4])
def test_flatten(axis):
    x = rand((2, 3, 4, 5))
    got = run(lambda n, t: n.add_flatten(t, axis), {"x": x})
    a = axis if axis >= 0 else axis + 4
    lead = 1
    for d in x.shape[:a]:
        lead *= d
    np.testing.assert_array_equal(got, x.reshape(lead, x.size // lead))


def test_flatten_default_is_n_by_chw_and_dynamic():
    net, x = one_input(rt.float32, (-1, 3, 4, 5))
    f = net.add_flatten(x)
    assert f.get_output(0).shape == (-1, 60)
    f.axis = 2
    assert f.get_output(0).shape == (-1, 20)
    with pytest.raises(ERR, match="expected an axis in \\[-4, 4\\]"):
        f.axis = 5
    assert K.flatten(np.zeros((0, 3)), 1).shape == (0, 3)


@pytest.mark.parametrize("shape,axes", [((2, 1, 3, 1), (1,)), ((2, 1, 3, 1), (1, -1)),
                                        ((1, 1), (0, 1))])
def test_squeeze_matches_tensorflow(tf, shape, axes):
    x = rand(shape)
    got = run(lambda n, t: n.add_squeeze(t, axes), {"x": x})
    np.testing.assert_array_equal(got, tf.squeeze(x, axes).numpy())


@pytest.mark.parametrize("shape,axes,out", [((2, 3), (0,), (1, 2, 3)), ((2, 3), (-1,), (2, 3, 1)),
                                            ((2, 3), (0, 3), (1, 2, 3, 1)), ((), (0, 1), (1, 1))])
def test_unsqueeze(tf, shape, axes, out):
    x = rand(shape)
    got = run(lambda n, t: n.add_unsqueeze(t, axes), {"x": x})
    assert got.shape == out
    ref = tf.constant(x)
    for a in sorted(a % len(out) for a in axes):
        ref = tf.expand_dims(ref, a)
    np.testing.assert_array_equal(got, ref.numpy())


def test_squeeze_unsqueeze_dynamic():
    net, x = one_input(rt.float32, (-1, -1, 4))
    sq = net.add_squeeze(x, (1,))          # size known only at run time
    assert sq.get_output(0).shape == (-1, 4)
    with pytest.raises(ERR, match="axis 1 of \\(2, 3, 4\\) has size 3"):
        sq.infer([(2, 3, 4)], [rt.float32])
    un = net.add_unsqueeze(sq.get_output(0), (1,))
    assert un.get_output(0).shape == (-1, 1, 4)
    un.axes = (0, 1)
    assert un.get_output(0).shape == (1, 1, -1, 4)


@pytest.mark.parametrize("adder,axes,expected", [
    ("add_squeeze", (2,), "axes of size 1"),
    ("add_squeeze", (1, -2), "no axis named twice"),
    ("add_squeeze", (3,), "expected an axis in \\[-3, 3\\)"),
    ("add_unsqueeze", (4,), "expected an axis in \\[-4, 4\\)"),
    ("add_unsqueeze", (0, 0), "no axis named twice")])
def test_squeeze_unsqueeze_reject(adder, axes, expected):
    net, x = one_input(rt.float32, (2, 1, 3))
    with pytest.raises(ERR, match=expected):
        getattr(net, adder)(x, axes)
    assert net.num_layers == 0


# ----------------------------------------------------------------------------
# concatenation, constant

@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_concatenation_matches_tensorflow(tf, axis):
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for i, s in enumerate(shapes):
        s[axis] += i
    xs = {f"x{i}": rand(s, i) for i, s in enumerate(shapes)}

    def build(n, *ts):
        return n.add_concatenation(ts, axis=axis)
    np.testing.assert_array_equal(run(build, xs), tf.concat(list(xs.values()), axis).numpy())


def test_concatenation_default_axis_and_dynamic():
    net = rt.Network()
    a = net.add_input("a", rt.float32, (-1, 3, 4, 4))
    b = net.add_input("b", rt.float32, (2, 5, -1, 4))
    c = net.add_concatenation([a, b])
    assert c.axis == 1                        # TensorRT's default: the channel axis
    assert c.get_output(0).shape == (2, 8, 4, 4)
    d = net.add_input("d", rt.float32, (2, -1, 4, 4))
    c2 = net.add_concatenation([a, d])
    assert c2.get_output(0).shape == (2, -1, 4, 4)
    one = net.add_concatenation([a])
    assert one.get_output(0).shape == (-1, 3, 4, 4)


@pytest.mark.parametrize("shapes,dtypes,expected", [
    ([(2, 3), (2, 3, 1)], [rt.float32] * 2, "input 1' is rank 3"),
    ([(2, 3), (2, 3)], [rt.float32, rt.int32], "input 1' is a INT32 tensor"),
    ([(2, 3), (2, 4)], [rt.float32] * 2, "dim 1 = 3 as in \\(2, 3\\)"),
    ([], [], "inputs' is 0 tensors")])
def test_concatenation_rejects(shapes, dtypes, expected):
    net = rt.Network()
    ins = [net.add_input(f"x{i}", d, s) for i, (s, d) in enumerate(zip(shapes, dtypes))]
    with pytest.raises(ERR, match=expected):
        net.add_concatenation(ins)
    assert net.num_layers == 0


def test_concatenation_rejects_bad_axis():
    net, x = one_input(rt.float32, (2, 3))
    c = net.add_concatenation([x, x])
    with pytest.raises(ERR, match="expected an axis in \\[-2, 2\\)"):
        c.axis = 2


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.bool_, np.float16])
@pytest.mark.parametrize("shape", [(2, 3), (), (1, 4, 1)])
def test_constant(dtype, shape):
    w = rand(shape, 3, np.float32).astype(dtype)
    net = rt.Network()
    c = net.add_constant(shape, w.ravel())
    assert c.get_output(0).dtype == rt.DataType.from_numpy(dtype)
    net.mark_output(c.get_output(0))
    got = interpret(net, {})[c.get_output(0).name]
    assert got.shape == shape
    np.testing.assert_array_equal(got, w)


def test_constant_rejects():
    net = rt.Network()
    with pytest.raises(ERR, match="'weights' is 5 values; expected 6 values for shape \\(2, 3\\)"):
        net.add_constant((2, 3), np.ones(5, np.float32))
    with pytest.raises(ERR, match="argument 'weights' is None"):
        net.add_constant((2, 3), None)
    assert net.num_layers == 0
    c = net.add_constant((6,), rt.Weights(np.arange(6, dtype=np.int32)))
    c.shape = (3, 2)
    assert c.get_output(0).shape == (3, 2)


# ----------------------------------------------------------------------------
# slice

@pytest.mark.parametrize("start,size,stride", [
    ((0, 0, 0), (2, 3, 4), (1, 1, 1)),
    ((1, 0, 1), (1, 2, 2), (1, 2, 3)),
    ((1, 2, 6), (2, 3, 4), (-1, -1, -2)),
    ((0, 1, 3), (2, 2, 3), (1, 0, 1)),
    ((0, 0, 0), (0, 3, 1), (1, 1, 1))])
def test_slice_strict_matches_tensorflow(tf, start, size, stride):
    x = rand((2, 3, 7))
    got = run(lambda n, t: n.add_slice(t, start, size, stride), {"x": x})
    if 0 in stride:      # TF cannot stride 0: it is a broadcast of one element
        ref = np.stack([x[:, 1:2, 3:6]] * 2, axis=1)[:, :, 0]
    else:
        end = [s + (n - 1) * st + (1 if st > 0 else -1) if n else s
               for s, n, st in zip(start, size, stride)]
        end_mask = sum(1 << i for i, e in enumerate(end) if e < 0)
        ref = tf.strided_slice(x, start, [max(e, 0) for e in end], stride,
                               end_mask=end_mask).numpy()
    np.testing.assert_array_equal(got, ref)


def _slice_loop(x, start, size, stride, mode, fill):
    """Naive reference: one output element at a time, TensorRT's formulas."""
    out = np.empty(size, x.dtype)
    for y in np.ndindex(*size):
        src, ok = [], True
        for s, yi, st, d in zip(start, y, stride, x.shape):
            c = s + yi * st
            if mode == "WRAP":
                c %= d
            elif mode == "CLAMP":
                c = min(max(c, 0), d - 1)
            elif mode == "REFLECT":
                if d == 1:
                    c = 0
                else:
                    c = abs(c) % (2 * d - 2)
                    c = 2 * d - 2 - c if c >= d else c
            elif not 0 <= c < d:
                ok = False
            src.append(c)
        out[y] = x[tuple(src)] if ok else fill
    return out


@pytest.mark.parametrize("mode", ["WRAP", "CLAMP", "FILL", "REFLECT"])
@pytest.mark.parametrize("start,size,stride", [
    ((-3, 0, -2), (2, 3, 9), (2, 1, 1)),
    ((1, -1, 5), (3, 5, 6), (-3, 1, -2)),
    ((0, 2, 1), (2, 2, 4), (0, 0, 3))])
def test_slice_sample_modes(mode, start, size, stride):
    x = rand((2, 1, 4), 5)
    fill = 7.5 if mode == "FILL" else 0.0

    def build(n, t):
        s = n.add_slice(t, start, size, stride, mode=rt.SampleMode[mode])
        s.fill_value = fill
        return s
    got = run(build, {"x": x})
    np.testing.assert_array_equal(got, _slice_loop(x, start, size, stride, mode, fill))


def test_slice_fill_from_empty_dim_and_default_fill_zero():
    x = np.zeros((2, 0), np.float32)

    def build(n, t):
        return n.add_slice(t, (0, 0), (2, 3), (1, 1), mode=rt.SampleMode.FILL)
    np.testing.assert_array_equal(run(build, {"x": x}), np.zeros((2, 3)))


def test_slice_dynamic_input_and_reinfer():
    net, x = one_input(rt.float32, (-1, 10))
    s = net.add_slice(x, (0, 2), (4, 3), (1, 2))
    assert s.get_output(0).shape == (4, 3)
    s.shape = (4, 4)
    assert s.get_output(0).shape == (4, 4)
    with pytest.raises(ERR, match="dim 0 reads 0..3 of size 2"):
        s.infer([(2, 10)], [rt.float32])
    assert rt.SampleMode.DEFAULT is rt.SampleMode.STRICT_BOUNDS


@pytest.mark.parametrize("args,expected", [
    (((0, 0), (2, 2), (1,)), "'stride' is \\(1,\\); expected 2 values"),
    (((0, 0), (2, 4), (1, 1)), "dim 1 reads 0..3 of size 3"),
    (((0, 2), (2, 2), (1, -1)), None),
    (((0, 2), (2, 4), (1, -1)), "dim 1 reads 2..-1 of size 3"),
    (((-1, 0), (2, 2), (1, 1)), "dim 0 reads -1..0"),
])
def test_slice_bounds(args, expected):
    net, x = one_input(rt.float32, (2, 3))
    if expected is None:
        assert net.add_slice(x, *args).get_output(0).shape == (2, 2)
        return
    with pytest.raises(ERR, match=expected):
        net.add_slice(x, *args)


def test_slice_rejects_empty_dim_outside_fill_mode():
    net, x = one_input(rt.float32, (2, 0))
    s = net.add_slice(x, (0, 0), (2, 0), (1, 1))
    with pytest.raises(ERR, match="expected a non-empty dim for WRAP mode"):
        _set(s, mode=rt.SampleMode.WRAP, shape=(2, 3))
    assert s.shape == (2, 0)


def test_slice_kernel_errors():
    with pytest.raises(IndexError, match="slice reads coordinate 3 of a dim of size 3"):
        K.slice_nd(np.zeros((3,)), (1,), (2,), (2,))
    with pytest.raises(ValueError, match="unknown sample mode"):
        K.slice_nd(np.zeros((3,)), (0,), (2,), (1,), "NOPE")


# ----------------------------------------------------------------------------
# gather

@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("ishape", [(4,), (2, 3), ()])
def test_gather_matches_tensorflow(tf, axis, ishape):
    data = rand((3, 4, 5), 6)
    d = data.shape[axis]
    idx = np.random.default_rng(7).integers(-d, d, ishape).astype(np.int32)
    got = run(lambda n, a, b: n.add_gather(a, b, axis), {"data": data, "idx": idx})
    ref = tf.gather(data, np.where(idx < 0, idx + d, idx), axis=axis).numpy()
    np.testing.assert_array_equal(got, ref)


def test_gather_dynamic_shapes():
    net = rt.Network()
    data = net.add_input("data", rt.float32, (-1, 8, 16))
    idx = net.add_input("idx", rt.int32, (-1, 3))
    g = net.add_gather(data, idx, 1)
    assert g.get_output(0).shape == (-1, -1, 3, 16)
    g.axis = 0
    assert g.get_output(0).shape == (-1, 3, 8, 16)


def test_gather_rejects():
    net = rt.Network()
    data = net.add_input("data", rt.float32, (3, 4))
    idx = net.add_input("idx", rt.int32, (2,))
    with pytest.raises(ERR, match="'indices' is a FLOAT tensor; expected an INT32 tensor"):
        net.add_gather(data, data, 0)
    with pytest.raises(ERR, match="expected an axis in \\[-2, 2\\)"):
        net.add_gather(data, idx, 2)
    g = net.add_gather(data, idx, 0)
    net.mark_output(g.get_output(0))
    with pytest.raises(rt.ExecutionError, match="index 3 is out of range for axis 0 of size 3"):
        interpret(net, {"data": rand((3, 4)), "idx": np.array([0, 3], np.int32)})


# ----------------------------------------------------------------------------
# the layer classes are registered under their layer types

def test_layer_types():
    for cls, lt in [(L.ShuffleLayer, "SHUFFLE"), (L.SliceLayer, "SLICE"),
                    (L.GatherLayer, "GATHER"), (L.ConstantLayer, "CONSTANT")]:
        assert cls.layer_type == rt.LayerType[lt]


# ----------------------------------------------------------------------------
# plan round trip

def test_shape_layers_survive_a_plan_round_trip():
    from engine import plan as planfile
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 3, 4))
    idx = net.add_input("idx", rt.int32, (2,))
    sh = _set(net.add_shuffle(x), first_transpose=(0, 2, 1), reshape_dims=(0, 0, 3, 1),
              second_transpose=(0, 2, 1, 3))
    sq = net.add_squeeze(sh.get_output(0), (3,))
    un = net.add_unsqueeze(sq.get_output(0), (0,))
    fl = net.add_flatten(un.get_output(0), 2)
    const = net.add_constant((1, 12), np.arange(12, dtype=np.float32))
    cat = net.add_concatenation([fl.get_output(0), const.get_output(0)], axis=0)
    sl = net.add_slice(cat.get_output(0), (-1, 2), (3, 5), (1, 3), mode=rt.SampleMode.FILL)
    sl.fill_value = -2.5
    g = net.add_gather(sl.get_output(0), idx, 1)
    net.mark_output(g.get_output(0))
    arrays = planfile.ArrayTable()
    doc, table = planfile.loads(planfile.dumps(planfile.encode_network(net, arrays), arrays))
    back = planfile.decode_network(doc, table)
    feeds = {"x": rand((1, 3, 4)), "idx": np.array([4, -5], np.int32)}
    name = g.get_output(0).name
    got = interpret(back, feeds)[name]
    np.testing.assert_array_equal(got, interpret(net, feeds)[name])
    assert (got == -2.5).any()
    assert back.get_layer(6).mode == rt.SampleMode.FILL and back.get_layer(0).reshape_dims == (0, 0, 3, 1)


@pytest.mark.parametrize("start,stride", [((0, 0, 2), (1, 1, 2)), ((1, 2, 6), (1, -1, -3)),
                                          ((0, 3, 7), (2, 1, 1))])
def test_slice_to_the_end_of_a_dynamic_dim(tf, start, stride):
    net, t = one_input(rt.float32, (-1, 3, 7))
    s = net.add_slice(t, start, (-1, -1, -1), stride)
    assert s.get_output(0).shape == (-1,) + s.infer([(2, 3, 7)], [rt.float32])[0][0][1:]
    net.mark_output(s.get_output(0))
    x = rand((2, 3, 7))
    got = interpret(net, {"x": x})[s.get_output(0).name]
    ref = x[tuple(slice(b, None, st) for b, st in zip(start, stride))]
    np.testing.assert_array_equal(got, ref)
    assert got.shape == s.infer([x.shape], [rt.float32])[0][0]


def test_slice_to_the_end_needs_a_stride():
    net, t = one_input(rt.float32, (4,))
    with pytest.raises(ERR, match="expected a non-zero stride where shape is -1 \\(dim 0\\)"):
        net.add_slice(t, (0,), (-1,), (0,))
