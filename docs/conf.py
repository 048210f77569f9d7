"""Sphinx configuration of the API reference (``make docs``; warnings are errors)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "riemannian-flows"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"          # signatures as written; types are in the docstrings
napoleon_google_docstring = True
napoleon_numpy_docstring = False
exclude_patterns = ["_build", "guide.md"]
html_theme = "alabaster"
suppress_warnings = ["ref.python"]   # a name re-exported by two packages is documented once, where it lives
