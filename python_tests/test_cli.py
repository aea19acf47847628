"""The command line as a user runs it."""

import json
import subprocess
import sys

import pytest
import torch


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "swamp_ext", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_run_writes_results_and_safetensors(tmp_path):
    out = tmp_path / "demo"
    p = cli("run", "--model", "lenet_300_100", "--dataset", "digits", "--method", "swamp",
            "--particles", "2", "--rounds", "3", "--epochs", "3", "--batch-size", "64",
            "--out", str(out), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("round ") == 3
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["particles"] == 2 and res["config"]["method"] == "swamp"
    assert [r["round"] for r in res["rounds"]] == [0, 1, 2]
    assert res["rounds"][2]["sparsity"] == pytest.approx(0.36, abs=1e-5)
    from safetensors.torch import load_file

    tensors = load_file(str(out / "model.safetensors"))
    mask = tensors["mask.fc1.weight"]
    assert mask.dtype == torch.bool
    assert torch.all(tensors["fc1.weight"][~mask] == 0)
    assert res["rounds"][2]["remaining"] == sum(int(v.sum()) for k, v in tensors.items()
                                                if k.startswith("mask."))


def test_bad_flags_give_a_clear_error(tmp_path):
    p = cli("run", "--dataset", "digits", "--particles", "0", cwd=tmp_path)
    assert p.returncode == 2 and "Config.particles" in p.stderr
    p = cli("run", "--dataset", "nope", cwd=tmp_path)
    assert p.returncode == 2 and "unknown dataset" in p.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = cli("run", "--dataset", "digits", "--out", str(blocker / "sub"), cwd=tmp_path)
    assert p.returncode == 2 and "cannot write to --out" in p.stderr


def test_streamed_image_folder_from_the_command_line(tmp_path):
    from test_torch_data import make_folder

    make_folder(tmp_path / "imgs")
    out = tmp_path / "run"
    args = ("run", "--model", "conv2", "--dataset", "imagefolder", "--data-root",
            str(tmp_path / "imgs"), "--method", "imp", "--rounds", "2", "--epochs", "2",
            "--batch-size", "8", "--out")
    p = cli(*args, str(out), "--stream", "on", "--workers", "1", "--image-size", "8",
            cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("round ") == 2
    assert not list((tmp_path / "imgs").glob(".swamp_cache_*"))  # streamed: nothing decoded
    p = cli(*args, str(tmp_path / "cached"), "--stream", "off", "--image-size", "8", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert list((tmp_path / "imgs").glob(".swamp_cache_*"))
    streamed = json.loads((out / "results.json").read_text())["rounds"]
    cached = json.loads((tmp_path / "cached" / "results.json").read_text())["rounds"]
    assert [r["test_acc"] for r in streamed] == [r["test_acc"] for r in cached]
    p = cli("run", "--dataset", "digits", "--stream", "on", cwd=tmp_path)
    assert p.returncode == 2 and "takes no options, got ['stream']" in p.stderr


def test_console_script_installed():
    import shutil

    exe = shutil.which("swamp-ext")
    assert exe is not None
    p = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip()
