"""Sphinx configuration: the API reference, built from the docstrings (Google style)."""

import captum_layerinf

project = "captum-layerinf"
author = "captum-layerinf developers"
release = captum_layerinf.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True, "exclude-members": "Settings"}
# Markdown write-ups (benchmarks, the study) are read on GitHub; Sphinx builds the API.
exclude_patterns = ["_build", "**/*.md", "figures"]
source_suffix = {".rst": "restructuredtext"}
html_theme = "alabaster"
nitpicky = False
suppress_warnings = ["ref.python"]


def _skip_reexported_strategies(app, what, name, obj, skip, options):
    """Strategies' names re-exported by `captum_layerinf.influence` are documented once."""
    module = getattr(obj, "__module__", "") or ""
    if what == "module" and module.startswith("captum_layerinf.influence.strategies"):
        return app.env.temp_data.get("autodoc:module") != "captum_layerinf.influence.strategies"
    return None


def setup(app):
    """Registers the hook above."""
    app.connect("autodoc-skip-member", _skip_reexported_strategies)
