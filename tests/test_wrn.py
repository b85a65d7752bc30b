import pytest
import torch

from ccql_utils import WideResNet, count_parameters


def test_wrn_28_10_has_36_5m_parameters():
    model = WideResNet(28, 10, num_classes=100)
    assert count_parameters(model) == pytest.approx(36.5e6, rel=2e-3)
    head = 640 * 100 + 100
    assert count_parameters(model) - head == pytest.approx(36.46e6, rel=2e-3)


@pytest.mark.parametrize("depth,width,classes", [(10, 1, 5), (16, 2, 25), (22, 1, 100)])
def test_small_models_map_images_to_class_outputs(depth, width, classes):
    model = WideResNet(depth, width, classes)
    out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, classes)
    blocks = [m for m in model.modules() if type(m).__name__ == "WideBasicBlock"]
    assert len(blocks) == 3 * (depth - 4) // 6


def test_structure_follows_zagoruyko_komodakis():
    model = WideResNet(16, 4, 10)
    assert model.conv1.out_channels == 16
    widths = [g[0].conv2.out_channels for g in (model.group1, model.group2, model.group3)]
    assert widths == [64, 128, 256]
    # a 1x1 projection where the shape changes, identity elsewhere
    assert model.group1[0].shortcut.kernel_size == (1, 1)
    assert model.group1[1].shortcut is None
    assert model.group2[0].shortcut.stride == (2, 2)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_he_initialisation_scale():
    torch.manual_seed(0)
    conv = WideResNet(28, 10, 100).group3[1].conv1  # 640 -> 640, 3x3
    expected_std = (2.0 / (640 * 9)) ** 0.5          # fan_out mode
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.02)


@pytest.mark.parametrize("kwargs,match", [({"depth": 27}, "6n \\+ 4"), ({"depth": 4}, "6n \\+ 4"),
                                          ({"widen_factor": 0}, "widen_factor"),
                                          ({"num_classes": 1}, "num_classes"),
                                          ({"dropout": 1.0}, "dropout")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WideResNet(**kwargs)


def test_dropout_active_only_in_training():
    torch.manual_seed(0)
    model = WideResNet(10, 1, 5, dropout=0.5)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(1); a = model(x)
    torch.manual_seed(2); b = model(x)
    assert not torch.equal(a, b)
