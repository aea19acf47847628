"""How a library of ours was linked against libstdc++: the facts gpu_check records and the
packaging tests assert (the build itself checks the same in cmake/SwampCheckLibstdcxx.cmake).

One libstdc++ per process: a copy of libstdc++.a linked into swamp_core or _C keeps its own
iostream / locale state beside torch's, and numbers vanish from messages or the process crashes.
The installed libraries are stripped, so only the DYNAMIC symbol table tells (`nm -D`).

    python scripts/linkfacts.py LIBRARY...        prints the facts of each library as JSON
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys

# names that can come from the C++ runtime: std::, __gnu_cxx::, the ABI's __cxa_ / __gxx_,
# operator new / delete, their vtables, typeinfos and guard variables (mangled)
RUNTIME_NAME = re.compile(r"^(_ZN?K?S[taiosd]|_ZN?K?9__gnu_cxx|_ZT[VISHW]N?S|_ZT[VISHW]N?9__gnu_cxx"
                          r"|_ZGV|_Zn[wa]|_Zd[la]|__cxa_|__gxx_|_ZNK?10__cxxabiv1"
                          r"|_ZT[VIS]N10__cxxabiv1)")


def cxx() -> str:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or "c++"


def print_file_name(name: str) -> str:
    """`c++ -print-file-name=NAME`: the toolchain's own file (the bare name where it has none)."""
    try:
        out = subprocess.run([cxx(), f"-print-file-name={name}"], capture_output=True, text=True,
                             timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return os.path.realpath(out) if os.path.isabs(out) else out


def dynamic_defined(lib: str, strong: bool = False) -> list[str]:
    """The names a (possibly stripped) shared library defines: `nm -D --defined-only`. STRONG:
    only strong definitions (T, D, B, R...), not weak ones (W, V, u): a template instantiation of
    ours may share a name with one libstdc++ exports and is harmless; libstdc++'s own compiled
    code (codecvt's members) is strong where it was copied in."""
    out = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True,
                         check=True).stdout
    names = []
    for ln in out.splitlines():
        parts = ln.split()
        if len(parts) >= 3 and not (strong and parts[1] in "WwVvu"):
            names.append(parts[2].split("@")[0])
    return names


def demangle(names: list[str]) -> list[str]:
    if not names or not shutil.which("c++filt"):
        return names
    out = subprocess.run(["c++filt", *names], capture_output=True, text=True).stdout.splitlines()
    return out if len(out) == len(names) else names


def libstdcxx_copied(lib: str, stdlib: str | None = None, mangled: bool = False) -> list[str]:
    """The libstdc++ symbols LIB defines itself (the telling ones first: codecvt's members and
    ostream::_M_insert are libstdc++'s own compiled code, never a template of ours): empty when
    LIB uses the shared libstdc++ only. Demangled unless MANGLED."""
    stdlib = stdlib or print_file_name("libstdc++.so.6")
    std = set(dynamic_defined(stdlib))
    own = [s for s in dynamic_defined(lib, strong=True) if RUNTIME_NAME.match(s) and s in std]
    own.sort(key=lambda s: (not re.search("codecvt|_M_insert", s), s))
    return own if mangled else demangle(own)


def needed(lib: str) -> list[str]:
    """NEEDED entries of LIB (`readelf -d`)."""
    out = subprocess.run(["readelf", "-d", lib], capture_output=True, text=True,
                         check=True).stdout
    return re.findall(r"Shared library: \[([^\]]+)\]", out)


def library_facts(lib: str) -> dict:
    facts: dict = {"path": lib}
    try:
        facts["needed"] = needed(lib)
        facts["needs_shared_libstdcxx"] = "libstdc++.so.6" in facts["needed"]
    except (OSError, subprocess.CalledProcessError) as e:
        facts["needed_error"] = str(e)
    try:
        own = libstdcxx_copied(lib)
        facts["libstdcxx_defined"] = len(own)
        facts["libstdcxx_examples"] = own[:5]
    except (OSError, subprocess.CalledProcessError) as e:
        facts["libstdcxx_error"] = str(e)
    return facts


def installed_libraries(package_dir: str) -> dict[str, str]:
    """swamp_core and _C of an installed swamp_ext (real files, not the version symlinks)."""
    found = {}
    core = [p for p in sorted(glob.glob(os.path.join(package_dir, "lib", "libswamp_core.so*")))
            if not os.path.islink(p)]
    if core:
        found["core"] = core[0]
    mod = sorted(glob.glob(os.path.join(package_dir, "_C*.so")))
    if mod:
        found["module"] = mod[0]
    return found


def build_dirs(root: str) -> list[str]:
    return sorted(d for d in glob.glob(os.path.join(root, "build", "*"))
                  if os.path.isfile(os.path.join(d, "build.ninja")))


def link_output(build_dir: str, library: str = "swamp_core") -> str | None:
    """The path (relative to BUILD_DIR) ninja links LIBRARY to (swamp_core or _C)."""
    try:
        with open(os.path.join(build_dir, "build.ninja"), errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    rule = r"^build (\S+): \w*(?:SHARED_LIBRARY|MODULE_LIBRARY)_LINKER__" + re.escape(library)
    m = re.search(rule + r"_\w*", text, re.M)
    return m.group(1).replace("$:", ":") if m else None


def link_command(build_dir: str, output: str) -> str | None:
    """The compiler invocation ninja runs to link OUTPUT (with its LINK_PATH, flags and
    libraries), run from BUILD_DIR; the steps after it (symlinks, the libstdc++ check) left out."""
    try:
        out = subprocess.run(["ninja", "-C", build_dir, "-t", "commands", "-s", output],
                             capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for ln in out.splitlines():
        for part in ln.split(" && "):
            if f" -o {output}" in part:
                return part.strip()
    return None


def cache_flags(build_dir: str) -> dict[str, str]:
    """Every *LINKER_FLAGS* / *CXX_FLAGS* cache variable (each configuration's too), the toolchain
    file and the compiler, from CMakeCache.txt."""
    flags = {}
    try:
        with open(os.path.join(build_dir, "CMakeCache.txt"), errors="replace") as f:
            for ln in f:
                m = re.match(r"^([A-Za-z0-9_]+):[A-Z]+=(.*)$", ln.rstrip("\n"))
                if m and (re.search(r"LINKER_FLAGS|CXX_FLAGS", m.group(1)) or m.group(1) in (
                        "CMAKE_TOOLCHAIN_FILE", "CMAKE_CXX_COMPILER", "SWAMP_LIBSTDCXX_SHARED")):
                    flags[m.group(1)] = m.group(2)
    except OSError:
        pass
    return flags


def trace_symbol(build_dir: str, command: str, output: str, symbol: str, scratch: str) -> str:
    """Relink OUTPUT into SCRATCH with `-Wl,--trace -Wl,-y,SYMBOL`: ld names every libstdc++ file
    it reads and the one that defined SYMBOL (an archive member like libstdc++.a(locale.o) when
    a copy was linked in)."""
    relinked = os.path.join(os.path.abspath(scratch), "relinked.so")
    cmd = command.replace(f" -o {output}", f" -o {relinked}")
    cmd += f" -Wl,--trace -Wl,-y,{symbol}"
    try:
        p = subprocess.run(cmd, shell=True, cwd=build_dir, capture_output=True, text=True,
                           timeout=300)
    except subprocess.TimeoutExpired:
        return "relink timed out"
    keep = [ln for ln in (p.stdout + p.stderr).splitlines() if symbol in ln or "libstdc++" in ln]
    return "\n".join(keep[-40:]) or f"relink exit status {p.returncode}: {p.stderr[-400:]}"


if __name__ == "__main__":
    print(json.dumps({lib: library_facts(lib) for lib in sys.argv[1:]}, indent=1))
