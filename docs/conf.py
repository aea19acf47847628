"""Sphinx configuration of the swamp_ext documentation (built by `bash scripts/docs.sh`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

import swamp_ext  # noqa: E402  (the installed package: the reference documents what users get)

project = "swamp_ext"
author = "the swamp_ext developers"
copyright = "2026, the swamp_ext developers"
release = swamp_ext.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "swamp_reference",
]
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "_ext", "_generated", "figures"]
templates_path = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"swamp_ext {release}"
html_static_path = []
nitpicky = False
suppress_warnings = []
