"""Every model of the zoo: built in C++, mirrored in plain PyTorch with the same outputs."""

import pytest
import torch

import swamp_ext
from swamp_ext import models

SHAPES = {
    "lenet_300_100": (1, 28, 28), "lenet5": (1, 28, 28), "conv2": (3, 32, 32),
    "conv4": (3, 32, 32), "conv4_small": (1, 28, 28), "conv6": (3, 32, 32),
    "resnet20": (3, 32, 32), "resnet32": (3, 32, 32), "resnet56": (3, 32, 32),
    "resnet18": (3, 32, 32), "resnet18_imagenet": (3, 64, 64), "vgg11": (3, 32, 32),
    "vgg13": (3, 32, 32), "vgg16": (3, 32, 32), "vgg19": (3, 32, 32), "wrn28_2": (3, 32, 32),
    "wrn16_4": (3, 32, 32), "wrn28_10": (3, 32, 32), "wrn10_1": (3, 32, 32),
}


def test_every_registered_model_is_covered():
    assert set(models.names()) <= set(SHAPES)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_to_torch_matches_cpp(name):
    shape = SHAPES[name]
    state, prunable = models.create(name, shape, 7, seed=5)
    g = torch.Generator().manual_seed(0)
    # non-trivial batch-norm statistics, so that eval-mode normalisation is compared too
    for k, v in state.items():
        if k.endswith("running_mean"):
            state[k] = torch.randn(v.shape, generator=g) * 0.1
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
    x = torch.randn(2, *shape, generator=g)
    ref = models.forward(name, shape, 7, state, x)
    module = models.to_torch(name, state, shape, 7)
    assert isinstance(module, torch.nn.Module) and not module.training
    assert set(module.state_dict()) == set(state)
    with torch.no_grad():
        out = module(x)
    assert out.shape == (2, 7)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    # prunable = conv and linear weights only, never biases or batch norm
    for n in prunable:
        assert n.endswith("weight") and state[n].dim() >= 2
    assert all(not n.startswith("bn") for n in prunable)


def test_initialisation_follows_the_family_and_is_seeded():
    a, _ = models.create("resnet20", (3, 32, 32), 10, seed=1)
    b, _ = models.create("resnet20", (3, 32, 32), 10, seed=1)
    c, _ = models.create("resnet20", (3, 32, 32), 10, seed=2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])
    w = a["layer2.0.conv1.weight"]  # kaiming normal, fan_in = 16 * 9
    assert abs(float(w.std()) - (2 / (16 * 9)) ** 0.5) < 0.02
    assert torch.all(a["bn1.weight"] == 1) and torch.all(a["bn1.bias"] == 0)


def test_models_take_shape_and_classes_from_the_data():
    state, _ = models.create("vgg11", (1, 28, 28), 3)
    assert state["fc.weight"].shape == (3, 512) and state["conv1.weight"].shape[1] == 1
    state, _ = models.create("lenet5", (3, 32, 32), 100)
    assert state["fc1.weight"].shape == (120, 16 * 6 * 6)


@pytest.mark.parametrize("name, shape, msg", [
    ("conv6", (3, 4, 4), "at least 8x8"),
    ("resnet20", (784,), "image inputs"),
    ("wrn13_2", (3, 32, 32), "6n \\+ 4"),
    ("nosuchnet", (3, 32, 32), "unknown model"),
])
def test_bad_model_requests(name, shape, msg):
    with pytest.raises(ValueError, match=msg):
        models.create(name, shape, 10)


def test_result_to_torch_reproduces_the_reported_accuracy():
    data = swamp_ext.datasets.load("digits")
    cfg = swamp_ext.Config(model="conv4_small", method="swamp", particles=2, rounds=2, epochs=2,
                           batch_size=64, seed=1)
    res = swamp_ext.run_imp(cfg, data, progress=False)
    net = res.to_torch()
    with torch.no_grad():
        acc = (net(data.x_test).argmax(1) == data.y_test).double().mean().item()
    assert acc == pytest.approx(res.rounds[-1].test_acc, abs=1e-9)


def test_train_throughput_runs():
    ips = models.train_throughput("lenet_300_100", (1, 28, 28), 10, batch_size=32, steps=2)
    assert ips > 0
