"""Rebuilding PyTorch CNNs through the network API (skips without torch)."""
import numpy as np
import pytest

import engine as rt
from engine.testing import rel_l2

torch = pytest.importorskip("torch")
nn = torch.nn
from workflows.from_torch import UnsupportedTorchOp, import_module  # noqa: E402


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + x)


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6())
        self.block = Block(8)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.pool(self.block(self.stem(x)))
        return self.fc(torch.flatten(self.gap(x), 1))


def randomise_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g) * 0.2 + 1)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_small_cnn_matches_pytorch():
    torch.manual_seed(0)
    model = SmallNet().eval()
    randomise_bn(model)
    b, net = import_module(model, (-1, 3, 32, 32))
    engine = b.build_engine(net, b.create_builder_config())
    types = [i.type for i in engine.layers]
    assert rt.LayerType.SCALE not in types and rt.LayerType.ACTIVATION not in types
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    got = engine.create_execution_context().execute({"input": x})["output"]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert rel_l2(got, ref) <= 1e-5


def test_unsupported_module_is_named():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.PReLU())
    with pytest.raises(UnsupportedTorchOp, match="PReLU"):
        import_module(model, (1, 3, 8, 8))


class FunctionalNet(nn.Module):
    """MobileNetV2's head: functional pooling and relu, dropout, flatten."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = nn.functional.relu(self.conv(x))
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        return self.fc(self.drop(torch.flatten(x, 1)))


def test_functional_calls_are_imported():
    torch.manual_seed(1)
    model = FunctionalNet().eval()
    b, net = import_module(model, (2, 3, 8, 8))
    engine = b.build_engine(net, b.create_builder_config())
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert rel_l2(engine.create_execution_context().execute({"input": x})["output"], ref) <= 1e-5


@pytest.mark.parametrize("module,match", [
    (nn.Conv2d(3, 4, 3, padding_mode="reflect"), "padding_mode 'reflect'"),
    (nn.MaxPool2d(2, ceil_mode=True), "ceil_mode"),
    (nn.AdaptiveAvgPool2d(2), "output_size 2"),
])
def test_unsupported_module_options_are_named(module, match):
    with pytest.raises(UnsupportedTorchOp, match=match):
        import_module(nn.Sequential(module), (1, 3, 8, 8))


class TwoOutputs(nn.Module):
    def forward(self, x):
        return x, x


class Cube(nn.Module):
    def forward(self, x):
        return torch.pow(x, 3)


def test_unsupported_functions_and_outputs_are_named():
    with pytest.raises(UnsupportedTorchOp, match="function pow"):
        import_module(Cube(), (1, 3))
    with pytest.raises(UnsupportedTorchOp, match="several outputs"):
        import_module(TwoOutputs(), (1, 3))


class Views(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(24, 2)
        self.act = nn.Hardtanh(-0.5, 0.5)
        self.pool = nn.AvgPool2d(2, count_include_pad=False)

    def forward(self, x):
        x = self.pool(x)
        x = torch.cat([x, x], 1).view(-1, 24)
        return self.act(self.fc(x))


def test_views_concat_avgpool_and_hardtanh():
    torch.manual_seed(2)
    model = Views().eval()
    b, net = import_module(model, (2, 3, 4, 4))
    engine = b.build_engine(net, b.create_builder_config())
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert rel_l2(engine.create_execution_context().execute({"input": x})["output"], ref) <= 1e-5
