"""The package as users meet it: version, import checks, the CMake package and the C++ example."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import swamp_ext

ROOT = Path(__file__).resolve().parents[1]


def test_version_and_build_info():
    from swamp_ext import _build_info

    assert swamp_ext.__version__ == _build_info.version
    assert swamp_ext._C.built_with_torch_version().split("+")[0] == torch.__version__.split("+")[0]


def test_torch_version_mismatch_explains_how_to_rebuild(tmp_path):
    code = textwrap.dedent(
        """
        import torch
        torch.__version__ = "1.0.0"
        try:
            import swamp_ext
        except ImportError as e:
            print("IMPORT-ERROR:", e)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    ).stdout
    assert "IMPORT-ERROR" in out
    assert "built against torch" in out and "1.0.0" in out
    assert "--no-build-isolation" in out


@pytest.mark.skipif(not all(shutil.which(t) for t in ("nm", "readelf")),
                    reason="binutils (nm, readelf) not installed")
def test_the_installed_core_and_module_use_the_shared_libstdcxx():
    # a libstdc++ copied into swamp_core or _C has its own locale state beside torch's: numbers
    # vanish from messages or the process crashes (seen on a GPU machine). The installed libraries
    # are stripped: only their dynamic symbols tell (nm -D), as scripts/linkfacts.py reads them.
    sys.path.insert(0, str(ROOT / "scripts"))
    import linkfacts

    libs = linkfacts.installed_libraries(str(Path(swamp_ext.__file__).parent))
    assert set(libs) == {"core", "module"}, libs
    for lib in libs.values():
        assert linkfacts.libstdcxx_copied(lib)[:5] == [], lib
        assert "libstdc++.so.6" in linkfacts.needed(lib), lib
    # and the check can fail: what it looks for is what the shared libstdc++ itself defines
    std = linkfacts.print_file_name("libstdc++.so.6")
    assert any("codecvt" in s for s in linkfacts.libstdcxx_copied(std))


def test_numbers_reach_the_cores_messages():
    # the symptom of a second libstdc++ here: "Config.rewind_epochs must be in [0, epochs), got "
    # with the number gone
    with pytest.raises(ValueError, match=r"rewind_epochs must be in \[0, epochs\), got 5$"):
        swamp_ext.Config(model="lenet_300_100", epochs=2, rewind_epochs=5)
    with pytest.raises(ValueError, match=r"prune_ratio must be in \(0, 1\), got 1\.5$"):
        swamp_ext.Config(model="lenet_300_100", prune_ratio=1.5)


def cmake_prefix_path() -> str:
    """What a C++ user runs: `python -m swamp_ext --cmake-prefix-path`."""
    return subprocess.run([sys.executable, "-m", "swamp_ext", "--cmake-prefix-path"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_cmake_prefix_path_holds_the_package_config():
    out = cmake_prefix_path()
    assert (Path(out) / "lib" / "cmake" / "swamp_core" / "swamp_coreConfig.cmake").is_file()
    assert (Path(out) / "include" / "swamp" / "pruning.h").is_file()


@pytest.fixture(scope="module")
def cpp_examples(tmp_path_factory):
    """examples/cpp built against the installed package, as a C++ user builds it."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    prefix = cmake_prefix_path()
    build = tmp_path_factory.mktemp("cpp") / "build"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    env = dict(os.environ, MAKEFLAGS="-j2")
    cfg = subprocess.run(
        [
            "cmake",
            "-S",
            str(ROOT / "examples" / "cpp"),
            "-B",
            str(build),
            *gen,
            f"-DCMAKE_PREFIX_PATH={prefix}",
            "-DCMAKE_BUILD_TYPE=Release",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    bld = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True, env=env)
    assert bld.returncode == 0, bld.stdout + bld.stderr
    return build


def test_cpp_example_builds_and_runs_against_installed_package(cpp_examples):
    exe = cpp_examples / "swamp_example"
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all checks passed" in run.stdout
    assert "own torch::nn::Module: masks and accuracies equal to the zoo run" in run.stdout


class _CppNet(torch.nn.Module):
    """The network of examples/cpp/prune_my_net.cpp, written in PyTorch (same names)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc1 = torch.nn.Linear(8 * 7 * 7, 64)
        self.drop = torch.nn.Dropout(0.1)
        self.fc2 = torch.nn.Linear(64, 10)

    def forward(self, x):
        h = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 4)
        return self.fc2(self.drop(torch.relu(self.fc1(h.flatten(1)))))


def test_cpp_program_prunes_its_own_module_on_data_written_by_python(cpp_examples, tmp_path):
    """Both ways: Python writes the data as safetensors, the C++ program prunes its own
    torch::nn::Module on it with SWAMP and writes weights and masks, Python reads them back into
    the same network and finds the accuracy and sparsity the program reported."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    d = swamp_ext.datasets.load("mnist5k")
    x_test, y_test = d.x_test[:512].contiguous(), d.y_test[:512].contiguous()
    save_file({"x_train": d.x_train[:1024].contiguous(), "y_train": d.y_train[:1024].contiguous(),
               "x_test": x_test, "y_test": y_test}, str(tmp_path / "data.safetensors"))
    out = tmp_path / "out"
    run = subprocess.run([str(cpp_examples / "prune_my_net"), str(tmp_path / "data.safetensors"),
                          str(out), "3", "2"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "precision fp32, channels-last no" in run.stdout  # auto: fp32 stays contiguous
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("final accuracy"))
    acc, sparsity = float(line.split()[2]), float(line.split()[4])
    tensors = load_file(str(out / "model.safetensors"))
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.metadata()["model"] == "cpp:net"
    masks = {k[5:]: v for k, v in tensors.items() if k.startswith("mask.")}
    state = {k: v for k, v in tensors.items() if not k.startswith("mask.")}
    assert set(masks) == {"conv.weight", "fc1.weight", "fc2.weight"}
    net = _CppNet()
    net.load_state_dict(state, strict=True)
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    assert sparsity == pytest.approx(1 - kept / total, abs=1e-6)
    assert sparsity == pytest.approx(0.36, abs=1e-3)  # round 2 trains under two 20% prunings
    for k, m in masks.items():
        assert m.dtype == torch.bool and not state[k][~m].any(), k
    with torch.no_grad():
        mine = (net.eval()(x_test).argmax(1) == y_test).double().mean().item()
    assert mine == pytest.approx(acc, abs=1.5 / 512)
    assert acc > 0.7
    # the analysis API from C++: the last round's particles are linearly connected
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("particle barrier"))
    barrier, mid = float(line.split()[4].rstrip(",")), float(line.split()[-1])
    assert 0 <= barrier < 0.05 and mid > 0.7
    # its dropout draws come from the config's seed, not from the program's generator state
    again = subprocess.run([str(cpp_examples / "prune_my_net"), str(tmp_path / "data.safetensors"),
                            str(tmp_path / "again"), "3", "2"], capture_output=True, text=True,
                           timeout=600, env=dict(os.environ, CALLER_SEED="12345"))
    assert again.returncode == 0, again.stdout + again.stderr
    other = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert all(torch.equal(tensors[k], other[k]) for k in tensors)
    # mixed precision from C++: bf16 autocast, fp32 weights and exact masks written; channels-last
    # as auto decides it for this CPU
    from swamp_ext.precision import cpu_has_native_bf16

    mixed = subprocess.run([str(cpp_examples / "prune_my_net"), str(tmp_path / "data.safetensors"),
                            str(tmp_path / "bf16"), "2", "2", "bf16"], capture_output=True,
                           text=True, timeout=600)
    assert mixed.returncode == 0, mixed.stdout + mixed.stderr
    picked = "yes" if cpu_has_native_bf16() else "no"
    assert f"precision bf16, channels-last {picked}" in mixed.stdout
    written = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    for k, m in written.items():
        if k.startswith("mask."):
            assert not written[k[5:]][~m].any(), k
        else:
            assert m.dtype in (torch.float32, torch.int64), k
    # a damaged data file is an error message and exit code 1, not a crash
    (tmp_path / "bad.safetensors").write_bytes((tmp_path / "data.safetensors").read_bytes()[:100])
    bad = subprocess.run([str(cpp_examples / "prune_my_net"), str(tmp_path / "bad.safetensors"),
                          str(out)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "safetensors file" in bad.stderr, bad.stderr


@pytest.mark.parametrize("particles", ["4", "1"])
def test_cpp_program_spreads_its_particles_over_torchrun_processes(cpp_examples, tmp_path,
                                                                   particles):
    """The same C++ program under torchrun (no Python in the workers): c10d's TCPStore and store
    collectives from the environment; 2 ranks x 4 particles (two each) or 1 particle (trained
    data-parallel by both, the gradients summed through the store) against one process."""
    from safetensors.torch import load_file, save_file

    d = swamp_ext.datasets.load("mnist5k")
    save_file({"x_train": d.x_train[:768].contiguous(), "y_train": d.y_train[:768].contiguous(),
               "x_test": d.x_test[:256].contiguous(), "y_test": d.y_test[:256].contiguous()},
              str(tmp_path / "data.safetensors"))
    exe, data = str(cpp_examples / "prune_my_net"), str(tmp_path / "data.safetensors")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([exe, data, str(tmp_path / "one"), "2", particles], capture_output=True,
                         text=True, timeout=600, env=env)
    assert one.returncode == 0, one.stdout + one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", "--no-python", exe, data, str(tmp_path / "two"),
                          "2", particles], capture_output=True, text=True, timeout=600, env=env)
    assert two.returncode == 0, two.stdout + two.stderr
    assert "rank 1 of 2" in two.stdout and "rank 0 of 2" in two.stdout
    each = 2 if particles == "1" else 1
    assert f"round 1: {particles} particles (processes per particle: {each})" in two.stdout, \
        two.stdout
    assert "(processes per particle: 1)" in one.stdout
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    masks = [k for k in a if k.startswith("mask.")]
    assert a.keys() == b.keys() and masks
    agree = sum(int((a[k] == b[k]).sum()) for k in masks) / sum(a[k].numel() for k in masks)
    print(f"\n{particles} particles, 2 processes vs 1: masks agree {agree:.6f}")
    # the ticket (and with 1 particle every round) is trained data-parallel by both processes,
    # each drawing its own dropout masks and batch-norm statistics for its shard (as DDP does):
    # another sample of the same training, not a rounding of the one-process run
    assert agree >= 0.95, agree

    def final(out):
        line = next(ln for ln in out.splitlines() if ln.startswith("final accuracy"))
        return float(line.split()[2])

    tolerance = 0.05
    print(f"final accuracy {final(one.stdout):.4f} vs {final(two.stdout):.4f}")
    assert abs(final(one.stdout) - final(two.stdout)) <= tolerance + 1e-12


def test_type_stub_matches_the_compiled_module():
    import ast

    stub = Path(swamp_ext.__file__).with_name("_C.pyi")
    assert stub.is_file() and Path(swamp_ext.__file__).with_name("py.typed").is_file()
    tree = ast.parse(stub.read_text())
    top = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    top |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)}
    top = {n for n in top if not n.startswith("_")}  # private helpers describe submodules
    for name in top:
        assert hasattr(swamp_ext._C, name), name
    where = {"_Ops": swamp_ext._C.ops, "_Models": swamp_ext._C.models,
             "_Testing": swamp_ext._C.testing, "_Io": swamp_ext._C.io,
             "_Analysis": swamp_ext._C.analysis}
    subs = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in where]
    assert len(subs) == len(where)
    for cls in subs:
        sub = where[cls.name]
        for item in cls.body:
            name = item.name if isinstance(item, ast.FunctionDef) else item.target.id
            assert hasattr(sub, name), f"{cls.name}.{name}"
