"""The ``coap-trio`` command (also ``python -m coap_trio``).

Delegates to :mod:`coap_trio.cli`: client verbs (``get``, ``post``, ``put``,
``delete``, ``fetch``, ``patch``, ``ipatch``, ``observe``, ``discover``,
``ping``), ``serve plugtest|fileserver``, and the ``demo`` and
``codec-demo`` walk-throughs. See ``docs/cli.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``coap-trio`` console script; returns the exit status."""
    from .cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
