"""Fixtures shared by the tests of the documentation: one Sphinx build per test run.

The site is built once (``docs_build``), in nitpicky mode so that every
reference that does not resolve is reported; the tests of the site, of the
exports and of the exceptions read its warnings, pages and object inventory.
"""

from __future__ import annotations

import pytest
from docs_helpers import DocsBuild, build_docs


@pytest.fixture(scope="session")
def docs_build(tmp_path_factory: pytest.TempPathFactory) -> DocsBuild:
    """The documentation site, built once per test run."""
    return build_docs(tmp_path_factory.mktemp("docs"))
