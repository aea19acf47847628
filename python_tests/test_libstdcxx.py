"""One libstdc++ per process, whatever the flags and the linker's search path say.

g++ ends every link with a plain -lstdc++ and ld takes the first libstdc++.so OR libstdc++.a on
its search path: a -L directory holding only the archive, or -static-libstdc++ in a variable a
guard does not read, copied libstdc++ into swamp_core without a word (numbers vanished from the
core's messages here; every run crashed on a GPU machine). Each test builds with such hostile flags
and checks the result the way it went wrong: the dynamic symbols (`nm -D`, the installed libraries
are stripped), NEEDED, and a number written to a stream after `import torch`.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import linkfacts  # noqa: E402

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or not all(shutil.which(t) for t in ("nm", "readelf", "cmake", "c++"))
    or not os.path.isabs(linkfacts.print_file_name("libstdc++.a")),
    reason="needs Linux, binutils (nm, readelf), cmake, a C++ compiler and its libstdc++.a",
)

PROBE = ROOT / "python_tests" / "libstdcxx_probe"


@pytest.fixture(scope="module")
def archive_only_dir(tmp_path_factory):
    """A directory holding only the toolchain's libstdc++.a, to put first on the search path."""
    d = tmp_path_factory.mktemp("archive_only")
    shutil.copy(linkfacts.print_file_name("libstdc++.a"), d / "libstdc++.a")
    return d


def build_probe(tmp_path, bind: bool, *defines: str, expect_ok: bool = True):
    build = tmp_path / f"probe_{'bound' if bind else 'plain'}"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    cfg = subprocess.run(
        ["cmake", "-S", str(PROBE), "-B", str(build), *gen, "-DCMAKE_BUILD_TYPE=Release",
         f"-DSWAMP_PROBE_BIND={'ON' if bind else 'OFF'}", f"-DSWAMP_CMAKE_DIR={ROOT / 'cmake'}",
         *defines],
        capture_output=True, text=True)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    bld = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True)
    if expect_ok:
        assert bld.returncode == 0, bld.stdout + bld.stderr
    return build / "libprobe.so", bld


def write_after_torch(lib: Path) -> str:
    """What the probe writes for "n=" << 42 << " " << 0.5 in a process that imported torch."""
    code = textwrap.dedent(f"""
        import ctypes, torch
        torch.zeros(3).sum().item()
        lib = ctypes.CDLL({str(lib)!r})
        buf = ctypes.create_string_buffer(64)
        n = lib.swamp_probe_write(buf, 64)
        print(repr(buf.value.decode()[:n]))
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, f"the probe crashed (status {p.returncode}): {p.stderr[-2000:]}"
    return p.stdout.strip()


HOSTILE = {
    "archive first on the search path": lambda d: [f"-DCMAKE_SHARED_LINKER_FLAGS=-L{d}"],
    "-static-libstdc++ in the Release flags": lambda d: [
        "-DCMAKE_SHARED_LINKER_FLAGS_RELEASE=-static-libstdc++"],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_library_built_our_way_binds_the_shared_libstdcxx(case, archive_only_dir, tmp_path):
    lib, _ = build_probe(tmp_path, True, *HOSTILE[case](archive_only_dir))
    assert linkfacts.libstdcxx_copied(str(lib)) == []
    assert "libstdc++.so.6" in linkfacts.needed(str(lib))
    assert write_after_torch(lib) == repr("n=42 0.5")


def test_the_same_flags_copy_libstdcxx_into_a_plain_library_and_our_check_refuses_it(
        archive_only_dir, tmp_path):
    """The control: without the binding these flags do copy libstdc++ in (so the test above can
    fail), and the check our build runs after every link fails, names the cause and the variable,
    and deletes the library."""
    lib, _ = build_probe(tmp_path, False, f"-DCMAKE_SHARED_LINKER_FLAGS=-L{archive_only_dir}")
    copied = linkfacts.libstdcxx_copied(str(lib))
    assert any("codecvt" in s for s in copied), copied[:5]
    assert "libstdc++.so.6" not in linkfacts.needed(str(lib))
    # gpu_check's relink with -Wl,--trace -Wl,-y names the archive that supplied a symbol
    build = str(lib.parent)
    out = linkfacts.link_output(build, "probe")
    cmd = linkfacts.link_command(build, out)
    sym = linkfacts.libstdcxx_copied(str(lib), mangled=True)[0]
    trace = linkfacts.trace_symbol(build, cmd, out, sym, str(tmp_path))
    assert "libstdc++.a" in trace and "definition of" in trace, trace
    check = subprocess.run(
        ["cmake", f"-DLIB={lib}", "-DNM=nm", "-DREADELF=readelf",
         f"-DSTDLIB={linkfacts.print_file_name('libstdc++.so.6')}",
         f"-DSUSPECTS=CMAKE_SHARED_LINKER_FLAGS='-L{archive_only_dir}'",
         "-P", str(ROOT / "cmake" / "SwampCheckLibstdcxx.cmake")],
        capture_output=True, text=True)
    assert check.returncode != 0
    msg = " ".join(check.stderr.split())
    assert "libstdc++.a" in msg and "codecvt" in msg and "CMAKE_SHARED_LINKER_FLAGS" in msg, msg
    assert not lib.exists()


def test_the_build_fails_naming_the_cause_when_a_copy_gets_in(archive_only_dir, tmp_path):
    """Through the build itself: a target given the binding whose link still pulls the archive in
    (-Wl,--whole-archive forces its members in) fails the build with the check's message."""
    lib, bld = build_probe(
        tmp_path, True,
        f"-DCMAKE_SHARED_LINKER_FLAGS=-Wl,--whole-archive {archive_only_dir}/libstdc++.a "
        "-Wl,--no-whole-archive -Wl,--allow-multiple-definition",
        expect_ok=False)
    out = " ".join((bld.stdout + bld.stderr).split())
    assert bld.returncode != 0, out[-2000:]
    assert "symbols of libstdc++ itself" in out and "CMAKE_SHARED_LINKER_FLAGS=" in out, out[-2000:]
    assert not lib.exists()


def _core_build():
    for build in linkfacts.build_dirs(str(ROOT)):
        out = linkfacts.link_output(build, "swamp_core")
        cmd = linkfacts.link_command(build, out) if out else None
        if cmd:
            return build, out, cmd
    pytest.skip("no build folder of swamp_core here (installed from a wheel)")


def test_the_cores_own_link_resists_the_archive_and_the_static_flag(archive_only_dir, tmp_path):
    """swamp_core's real link command (from build.ninja) run again with the archive-only
    directory first on the search path and -static-libstdc++ added: still no copy."""
    build, out, cmd = _core_build()
    compiler, rest = cmd.split(" ", 1)
    target = tmp_path / "libswamp_core_relinked.so"
    hostile = f"{compiler} -L{archive_only_dir} -static-libstdc++ {rest}".replace(
        f" -o {out}", f" -o {target}")
    p = subprocess.run(hostile, shell=True, cwd=build, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert linkfacts.libstdcxx_copied(str(target)) == []
    assert "libstdc++.so.6" in linkfacts.needed(str(target))
    # the control: the same hostile link without the shared library we name does copy it in
    shared = linkfacts.print_file_name("libstdc++.so.6")  # already a real path
    unbound = " ".join(tok for tok in hostile.split(" ")
                       if not (tok.endswith("libstdc++.so.6") and os.path.realpath(tok) == shared))
    assert unbound != hostile, "the core's link command does not name the shared libstdc++"
    p = subprocess.run(unbound, shell=True, cwd=build, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert linkfacts.libstdcxx_copied(str(target)) != []
