"""Command line: `python -m swamp_ext` / `swamp-ext`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence


def cmake_prefix_path() -> str:
    """Folder to add to CMAKE_PREFIX_PATH so that find_package(swamp_core) works."""
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.isdir(os.path.join(here, "lib", "cmake", "swamp_core")):
        return here
    # Imported from a source checkout: point at the installed package instead.
    from importlib import metadata

    try:
        installed = str(metadata.distribution("swamp_ext").locate_file("swamp_ext"))
    except metadata.PackageNotFoundError:
        installed = ""
    if installed and os.path.isdir(os.path.join(installed, "lib", "cmake", "swamp_core")):
        return installed
    raise SystemExit("swamp_ext is not installed: run `pip install --no-build-isolation .` first")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="swamp-ext", description=__doc__)
    parser.add_argument(
        "--cmake-prefix-path",
        action="store_true",
        help="print the folder to put in CMAKE_PREFIX_PATH for find_package(swamp_core)",
    )
    parser.add_argument("--version", action="store_true", help="print the version")
    args = parser.parse_args(argv)
    if args.cmake_prefix_path:
        print(cmake_prefix_path())
        return 0
    if args.version:
        import swamp_ext

        print(swamp_ext.__version__)
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
