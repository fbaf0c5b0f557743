"""Sphinx configuration of the coap_trio documentation.

The pages are the Markdown files in this directory, read by myst-parser as
they are (they also read well on a forge). Build with::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Everything here works offline: no intersphinx, no remote themes.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Import the checkout being documented, not some installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import coap_trio

project = "coap_trio"
author = "coap_trio developers"
copyright = "coap_trio developers"
release = coap_trio.__version__
version = release

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
# Not pages: the generator of api.md and build output.
exclude_patterns = ["_build", "gen_api.py", "conf.py", "Thumbs.db", ".DS_Store"]

# Headings get anchors so pages can link to sections (``page.md#section``).
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

html_theme = "alabaster"
html_title = f"coap_trio {release}"
html_static_path: list[str] = []
