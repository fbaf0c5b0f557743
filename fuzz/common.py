"""What every fuzz target of this folder shares: instrumenting coap_trio, running atheris.

Each target is a script: ``python fuzz/NAME.py [libFuzzer options]``, for
example ``python fuzz/codec.py -atheris_runs=1000000``. A target's
``test_one_input`` raises (and atheris reports a crash, with the input
written to ``crash-*``) when the code under test lets anything escape but
the errors it documents, or when a property checked on its result fails.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager

import atheris


def instrumented() -> AbstractContextManager[object]:
    """Instrument the modules of coap_trio imported inside the ``with`` block (and only them)."""
    return atheris.instrument_imports(include=["coap_trio"])


def main(test_one_input: Callable[[bytes], None]) -> None:
    """Run ``test_one_input`` under atheris with the command line's libFuzzer options."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
