"""Recipes: named TOML configurations, selectable and overridable on the command line."""

import json
import subprocess
import sys

import pytest

import swamp_ext
from swamp_ext import recipes


@pytest.mark.parametrize("name", recipes.names())
def test_every_recipe_is_a_valid_run(name):
    r = recipes.get(name)
    cfg = r.make_config()
    assert isinstance(cfg, swamp_ext.Config)
    assert r.dataset in swamp_ext.datasets.names()
    assert r.description and r.source and r.expected_cost
    assert cfg.momentum == 0.9 and cfg.prune_ratio == 0.2 and cfg.particles == 4
    assert cfg.swa_lr == 0.05 and cfg.swa_start == 0.75
    if r.dataset.startswith("cifar"):
        assert cfg.augment and cfg.batch_size == 128 and cfg.schedule == "cosine"


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
