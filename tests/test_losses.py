import math

import pytest
import torch
import torch.nn.functional as F

from ccql_utils import default_ccql_weight, make_loss


def random_batch(batch=16, num_classes=7, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    outputs = torch.randn(batch, num_classes, generator=gen, dtype=dtype) * 2
    labels = torch.randint(0, num_classes, (batch,), generator=gen)
    return outputs, labels


def per_sample_reference(name, outputs, labels, **opt):
    """Straight from the formulas in docs/protocol.md, one sample at a time."""
    values = []
    K = outputs.shape[1]
    for f, y in zip(outputs.tolist(), labels.tolist()):
        onehot = [1.0 if i == y else 0.0 for i in range(K)]
        ql = 0.5 * sum((o - v) ** 2 for o, v in zip(onehot, f))
        if name == "ce":
            values.append(-(f[y] - math.log(sum(math.exp(v) for v in f))))
        elif name == "ql":
            values.append(ql)
        elif name == "ccql":
            values.append(ql + opt["w"] / 2 * (1 - f[y]) ** 2)
        elif name == "rescaled_square":
            values.append((opt["k"] * (f[y] - opt["M"]) ** 2
                           + sum(v ** 2 for i, v in enumerate(f) if i != y)) / K)
    return sum(values) / len(values)


@pytest.mark.parametrize("name,opt", [("ce", {}), ("ql", {}), ("ccql", {"w": 2.5}),
                                      ("rescaled_square", {"k": 3.0, "M": 2.0})])
@pytest.mark.parametrize("seed", [0, 1])
def test_formulas_match_per_sample_definitions(name, opt, seed):
    outputs, labels = random_batch(seed=seed)
    loss = make_loss(name, 7, **opt)(outputs, labels)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(per_sample_reference(name, outputs, labels, **opt), rel=1e-12)


def test_ce_equals_torch():
    outputs, labels = random_batch(num_classes=25)
    assert torch.allclose(make_loss("ce", 25)(outputs, labels), F.cross_entropy(outputs, labels))


def test_ccql_with_zero_weight_is_ql():
    outputs, labels = random_batch()
    assert torch.allclose(make_loss("ccql", 7, w=0.0)(outputs, labels), make_loss("ql", 7)(outputs, labels))


@pytest.mark.parametrize("w", [0.0, 1.7, 8.95])
def test_ccql_is_rescaled_square_times_half_k(w):
    outputs, labels = random_batch(num_classes=11)
    ccql = make_loss("ccql", 11, w=w)(outputs, labels)
    rescaled = make_loss("rescaled_square", 11, k=1 + w, M=1.0)(outputs, labels)
    assert torch.allclose(ccql, rescaled * 11 / 2)


def test_ccql_default_weight_is_sqrt_k_minus_one_minus_one():
    assert make_loss("ccql", 25).w == pytest.approx(math.sqrt(24) - 1)
    assert default_ccql_weight(25) == pytest.approx(3.899, abs=1e-3)
    assert default_ccql_weight(100) == pytest.approx(8.950, abs=1e-3)
    assert default_ccql_weight(2) == 0.0


@pytest.mark.parametrize("name,opt,expected", [
    ("ce", {}, math.log(13)), ("ql", {}, 0.5), ("ccql", {"w": 3.0}, 2.0),
    ("rescaled_square", {"k": 2.0, "M": 3.0}, 18 / 13)])
def test_reference_value_is_loss_at_zero_outputs(name, opt, expected):
    loss = make_loss(name, 13, **opt)
    labels = torch.arange(13)
    assert loss.reference_value == pytest.approx(expected)
    assert loss(torch.zeros(13, 13, dtype=torch.float64), labels).item() == pytest.approx(expected)


@pytest.mark.parametrize("name,opt", [("ce", {}), ("ql", {}), ("ccql", {"w": 2.0}),
                                      ("rescaled_square", {"k": 2.0, "M": 1.5})])
def test_gradients_match_finite_differences(name, opt):
    outputs, labels = random_batch(batch=4, num_classes=5)
    outputs.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda o: make_loss(name, 5, **opt)(o, labels), (outputs,))


def test_quadratic_gradient_in_closed_form():
    outputs, labels = random_batch(batch=8, num_classes=6)
    outputs.requires_grad_(True)
    w = 2.0
    make_loss("ccql", 6, w=w)(outputs, labels).backward()
    onehot = F.one_hot(labels, 6).double()
    expected = (outputs.detach() - onehot) * (1 + w * onehot) / 8
    assert torch.allclose(outputs.grad, expected)


def test_bf16_outputs_are_computed_in_float32():
    outputs, labels = random_batch(dtype=torch.float32)
    exact = make_loss("ccql", 7)(outputs, labels)
    low = make_loss("ccql", 7)(outputs.bfloat16(), labels)
    assert low.dtype == torch.float32 and torch.allclose(low, exact, rtol=2e-2)


@pytest.mark.parametrize("make,match", [
    (lambda: make_loss("hinge", 5), "unknown loss"),
    (lambda: make_loss("ccql", 5, w=-0.1), "w >= 0"),
    (lambda: make_loss("ccql", 5, w=float("nan")), "w >= 0"),
    (lambda: make_loss("ce", 1), "num_classes"),
    (lambda: make_loss("ql", 5, w=1.0), "takes options"),
    (lambda: make_loss("rescaled_square", 5, k=0.0), "k > 0"),
    (lambda: make_loss("rescaled_square", 5, M=-1.0), "M > 0"),
])
def test_bad_construction_raises_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("outputs,labels,match", [
    (torch.zeros(4, 5), torch.tensor([0, 1, 2, 5]), "0..4"),
    (torch.zeros(4, 5), torch.tensor([0, 1, 2, -1]), "0..4"),
    (torch.zeros(4, 6), torch.tensor([0, 1, 2, 3]), r"\[B, 5\]"),
    (torch.zeros(4, 5), torch.tensor([0, 1, 2]), "labels must have shape"),
    (torch.zeros(4, 5), torch.zeros(4), "integer"),
])
def test_bad_inputs_raise_value_error(outputs, labels, match):
    with pytest.raises(ValueError, match=match):
        make_loss("ccql", 5)(outputs, labels)
