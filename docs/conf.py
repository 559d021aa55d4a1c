"""Sphinx configuration: MyST Markdown guides and an autodoc/autosummary API reference.

Build (warnings are errors)::

    pip install -e ".[docs]"
    python -m sphinx -W -b html docs docs/_build/html
"""

import coordjax

project = "coordjax"
author = "the coordjax authors"
copyright = "the coordjax authors"
release = coordjax.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# A report folder's reading.md is included in its report.md (coordjax report does it).
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "reports/*/reading.md"]
templates_path = ["_templates"]

# MyST: `{directive}` fences, $...$ maths not needed; heading anchors for [text](page.md#anchor).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference: one stub page per public name, generated at build time into api/_generated/.
autosummary_generate = True
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
# Google-style docstrings (Args:, Returns:, Raises:); "Attributes:" as :ivar: fields so that a
# dataclass field documented in its class docstring is not also a duplicate object description.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

html_theme = "furo"
html_title = f"coordjax {release}"


def _attribute_doc(app, what, name, obj, options, lines):
    """A re-exported constant (``coordjax.models.MODELS``) has no docstring of its own: autodoc
    would show its type's (``dict``'s). Use the attribute docstring written beside its definition
    in whichever ``coordjax`` module defines it, or none."""
    import sys

    from sphinx.pycode import ModuleAnalyzer

    if what not in ("data", "attribute") or _words(lines) != _words(_type_doc_lines(obj)):
        return
    attr = name.rpartition(".")[2]
    lines[:] = []
    for modname, module in sorted(sys.modules.items()):
        if not modname.startswith("coordjax") or getattr(module, attr, None) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except Exception:  # a module without source: nothing to find
            continue
        if ("", attr) in docs:
            lines[:] = list(docs[("", attr)])
            return


def _type_doc_lines(obj) -> list[str]:
    doc = type(obj).__doc__
    return doc.splitlines() if doc and obj.__doc__ == doc else ["(not a type's docstring)"]


def _words(lines: list[str]) -> list[str]:
    return " ".join(lines).split()


def setup(app):
    app.connect("autodoc-process-docstring", _attribute_doc)
