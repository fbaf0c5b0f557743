"""Mutation testing of the sans-I/O core with mutmut 3 (a documented run, not CI).

    pip install -e '.[test,mutation]'
    nice -n 10 python scripts/mutation.py TARGET [--max-children N] [MUTANT_GLOB ...]
    python scripts/mutation.py TARGET --results   # list the survivors again
    nice -n 10 python scripts/mutation.py TARGET --recheck   # today's tests on the survivors

Each TARGET mutates a few modules against their focused and neighbouring test
files only, so that every mutant runs a small, fast test command. mutmut reads
its settings from [tool.mutmut] in the pyproject.toml of the directory it runs
in and copies that directory's tree into mutants/; so each target gets a
directory of its own, mutants/TARGET/ (ignored by git), holding a copy of
coap_trio/ and tests/ and this project's pyproject.toml with a [tool.mutmut]
table for the target appended. A rerun copies again (keeping modification
times, so mutmut retests only the functions that changed) and mutmut keeps its
results there. docs/testing.md's "Mutation testing" section has the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CORE_MESSAGING_TESTS = [
    "tests/test_protocol_parts.py",
    "tests/test_protocol_messaging.py",
    "tests/test_protocol_transitions.py",
]

# target: (modules to mutate, the test files that run against them)
TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "codec": (
        ["coap_trio/codec.py"],
        [
            "tests/test_codec.py",
            "tests/test_codec_fuzz.py",
            "tests/test_message.py",
            "tests/test_options.py",
            "tests/test_interop_aiocoap_codec.py",
            # encode_options and encode_empty are the stream framing's and the
            # messaging machine's.
            "tests/test_protocol_framing.py",
            "tests/test_protocol_messaging.py",
            "tests/test_codec_mutants.py",
        ],
    ),
    "reliability": (
        ["coap_trio/protocol/reliability.py"],
        [
            *_CORE_MESSAGING_TESTS,
            # Notifications superseding CON ones inherit their retransmission.
            "tests/test_protocol_observe.py",
            "tests/test_reliability_mutants.py",
        ],
    ),
    "dedup": (
        ["coap_trio/protocol/dedup.py"],
        ["tests/test_dedup_store.py", *_CORE_MESSAGING_TESTS, "tests/test_dedup_mutants.py"],
    ),
    "blockwise": (
        ["coap_trio/protocol/blockwise.py"],
        [
            "tests/test_protocol_blockwise.py",
            "tests/test_protocol_blockwise_client.py",
            "tests/test_protocol_block2cache.py",
            "tests/test_bert.py",
            "tests/test_server_blockwise.py",
            "tests/test_client_blockwise.py",
            "tests/test_blockwise_mutants.py",
        ],
    ),
    "oscore": (
        [
            "coap_trio/protocol/oscore/protect.py",
            "coap_trio/protocol/oscore/replay.py",
            "coap_trio/protocol/oscore/option.py",
            "coap_trio/protocol/oscore/context.py",
        ],
        [
            "tests/test_oscore_protect.py",
            "tests/test_oscore_replay.py",
            "tests/test_oscore_context.py",
            "tests/test_oscore_errors.py",
            "tests/test_oscore_credentials.py",
            "tests/test_oscore_mutants.py",
        ],
    ),
    "dtls": (
        [
            "coap_trio/protocol/dtls/record.py",
            "coap_trio/protocol/dtls/cookie.py",
            "coap_trio/protocol/dtls/keys.py",
            "coap_trio/protocol/dtls/messages.py",
        ],
        [
            "tests/test_dtls_record.py",
            "tests/test_dtls_cookie.py",
            "tests/test_dtls_keys.py",
            "tests/test_dtls_messages.py",
            "tests/test_dtls_session.py",
            "tests/test_dtls_mutants.py",
        ],
    ),
}


#: Tests left out of a target's runs: slow measurements that every mutant of the
#: module would run, not behaviour (docs/testing.md says what they would add).
DESELECT: dict[str, list[str]] = {
    # 17 s on a busy machine: the bytes per entry of a store at its bound.
    "dedup": ["tests/test_dedup_store.py::test_memory_per_entry_at_the_bound"],
}


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def prepare(target: str) -> Path:
    """Lay out mutants/TARGET/ for mutmut and return it."""
    modules, tests = TARGETS[target]
    tests = [test for test in tests if (ROOT / test).exists()]
    work = ROOT / "mutants" / target
    work.mkdir(parents=True, exist_ok=True)
    for tree in ("coap_trio", "tests"):
        shutil.copytree(
            ROOT / tree,
            work / tree,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    config = (ROOT / "pyproject.toml").read_text()
    config += (
        "\n[tool.mutmut]\n"
        'source_paths = ["coap_trio"]\n'
        f"only_mutate = {_toml_list(modules)}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        # No cache writes into the copy.
        "pytest_add_cli_args = "
        + _toml_list(
            ["-p", "no:cacheprovider"]
            + [arg for test in DESELECT.get(target, []) for arg in ("--deselect", test)]
        )
        + "\n"
    )
    pyproject = work / "pyproject.toml"
    if not pyproject.exists() or pyproject.read_text() != config:
        pyproject.write_text(config)
    return work


def _survivors(work: Path, env: dict[str, str]) -> list[str]:
    """The mutants mutmut lists as survived in ``work``."""
    listing = subprocess.run(
        [sys.executable, "-m", "mutmut", "results"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [
        line.split(":")[0].strip() for line in listing.splitlines() if line.endswith(": survived")
    ]


def recheck(
    target: str, work: Path, env: dict[str, str], names: list[str], deselected: bool
) -> int:
    """Run the tests written since the run against each survivor (or each mutant
    named): the target's ``tests/test_*_mutants.py`` files, and with
    ``deselected`` the tests its runs leave out (:data:`DESELECT`).

    The rest of the selection ran against every survivor already. The test
    files are copied afresh into mutmut's tree; the mutated modules are
    mutmut's (``MUTANT_UNDER_TEST`` picks the mutant, as in its own runs). A
    new run would start over: a changed test selection resets mutmut's results.
    """
    tests = [
        test
        for test in TARGETS[target][1]
        if test.endswith("_mutants.py") and (ROOT / test).exists()
    ]
    if deselected:
        tests += DESELECT.get(target, [])
    tree = work / "mutants"
    for test in {test.partition("::")[0] for test in tests}:
        shutil.copy2(ROOT / test, tree / test)
    survivors = names or _survivors(work, env)
    still = []
    for name in survivors:
        code = subprocess.call(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
            cwd=tree,
            env=dict(env, MUTANT_UNDER_TEST=name, PYTHONPATH=str(tree)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        print(f"    {name}: {'killed' if code else 'survived'}", flush=True)
        if not code:
            still.append(name)
    print(f"{len(survivors) - len(still)} of {len(survivors)} survivors killed; {len(still)} left")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("mutants", nargs="*", help="mutant names or globs (default: all)")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--results", action="store_true", help="only list the survivors")
    parser.add_argument(
        "--recheck", action="store_true", help="run today's tests against the survivors"
    )
    parser.add_argument(
        "--with-deselected",
        action="store_true",
        help="--recheck with the tests the runs leave out (DESELECT) too",
    )
    args = parser.parse_intermixed_args()
    mutmut = [sys.executable, "-m", "mutmut"]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    if args.recheck:
        return recheck(
            args.target, ROOT / "mutants" / args.target, env, args.mutants, args.with_deselected
        )
    work = prepare(args.target)
    if not args.results:
        command = [*mutmut, "run", "--max-children", str(args.max_children), *args.mutants]
        code = subprocess.call(command, cwd=work, env=env)
        if code:
            return code
    return subprocess.call([*mutmut, "results"], cwd=work, env=env)


if __name__ == "__main__":
    sys.exit(main())
