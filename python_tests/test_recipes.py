"""Recipes: named TOML configurations, selectable and overridable on the command line."""

import json
import math
import subprocess
import sys

import pytest
import torch

import swamp_ext
from swamp_ext import recipes


@pytest.mark.parametrize("name", recipes.names())
def test_every_recipe_is_a_valid_run(name):
    # Each recipe is a valid config whose model fits its dataset's samples: one SWAMP round of
    # it (4 particles, SWA, BN recompute) runs on a few random images of that dataset's shape
    # and class count. Shapes and classes are the datasets' published ones, written here.
    published = {"cifar10": ([3, 32, 32], 10), "cifar100": ([3, 32, 32], 100),
                 "mnist5k": ([1, 28, 28], 10), "mnist": ([1, 28, 28], 10),
                 "fashion_mnist": ([1, 28, 28], 10), "digits": ([1, 8, 8], 10)}
    r = recipes.get(name)
    assert r.dataset in swamp_ext.datasets.names()
    assert r.description and r.source and r.expected_cost
    shape, classes = published[r.dataset]
    g = torch.Generator().manual_seed(0)
    n = 8
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % classes
    data = swamp_ext.datasets.from_arrays(x, y, x[:4], y[:4], num_classes=classes)
    cfg = r.make_config(rounds=1, epochs=2, rewind_epochs=1, batch_size=4, eval_batch_size=4)
    res = swamp_ext.run_imp(cfg, data, progress=False)
    assert res.rounds[0].particles == cfg.particles and math.isfinite(res.rounds[0].train_loss)


def test_expected_recipes_exist():
    assert {"cifar10_wrn28_2", "cifar10_vgg13", "cifar10_resnet20", "cifar100_wrn28_2",
            "mnist5k_lenet_300_100", "mnist5k_conv4"} <= set(recipes.names())


def cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "swamp_ext", *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=600)


def test_recipe_on_the_command_line_with_overrides(tmp_path):
    p = cli(tmp_path, "run", "--recipe", "mnist5k_lenet_300_100", "--dataset", "digits",
            "--rounds", "2", "--epochs", "2", "--particles", "2", "--out", "r")
    assert p.returncode == 0, p.stderr
    cfg = json.loads((tmp_path / "r" / "results.json").read_text())["config"]
    assert cfg["model"] == "lenet_300_100" and cfg["rounds"] == 2 and cfg["particles"] == 2
    assert cfg["weight_decay"] == 5e-4 and cfg["rewind_epochs"] == 1  # from the recipe


def test_edited_config_file(tmp_path):
    with open(recipes.get("mnist5k_lenet_300_100").path) as f:
        text = f.read()
    text = text.replace("particles = 4", "particles = 3").replace('dataset = "mnist5k"',
                                                                  'dataset = "digits"')
    (tmp_path / "mine.toml").write_text(text)
    p = cli(tmp_path, "run", "--config", "mine.toml", "--rounds", "1", "--epochs", "2",
            "--out", "r", "--no-nesterov")
    assert p.returncode == 0, p.stderr
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["config"]["particles"] == 3 and res["dataset"] == "digits"
    (tmp_path / "bad.toml").write_text("[config]\nparticlez = 3\n")
    p = cli(tmp_path, "run", "--config", "bad.toml")
    assert p.returncode == 2 and "particlez" in p.stderr
    (tmp_path / "broken.toml").write_text("[config\n")
    p = cli(tmp_path, "run", "--config", "broken.toml")
    assert p.returncode == 2 and "not valid TOML" in p.stderr
    p = cli(tmp_path, "run", "--recipe", "nope")
    assert p.returncode == 2 and "unknown recipe" in p.stderr
    p = cli(tmp_path, "run", "--recipe", "cifar10_resnet20")
    assert p.returncode == 2 and "--data-root" in p.stderr


def test_recipes_listing(tmp_path):
    p = cli(tmp_path, "recipes")
    assert p.returncode == 0 and "cifar10_wrn28_2" in p.stdout and "source:" in p.stdout


@pytest.mark.filterwarnings("ignore:precision='bf16' on a CPU")
def test_a_mixed_precision_recipe_reaches_the_run(tmp_path):
    r = recipes.get("cifar10_resnet20_bf16")
    assert r.config["precision"] == "bf16" and r.config["channels_last"] == "auto"
    p = cli(tmp_path, "run", "--recipe", "cifar10_resnet20_bf16", "--dataset", "digits",
            "--model", "conv2", "--rounds", "1", "--epochs", "2", "--rewind-epochs", "1",
            "--particles", "2",
            "--out", "r")
    assert p.returncode == 0, p.stderr
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    assert saved["config"]["precision"] == "bf16" and saved["config"]["channels_last"] == "auto"
    assert saved["channels_last"] is swamp_ext.precision.cpu_has_native_bf16()  # auto, conv model
    state = swamp_ext.load_run(tmp_path / "r").state_dict()
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
