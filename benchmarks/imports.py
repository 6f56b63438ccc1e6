"""Import time of tgsession in a new interpreter, as an installed copy pays it:
``python -m benchmarks.imports [--rounds N] [OTHER_CHECKOUT]``.

Each import runs with its bytecode already compiled (pip compiles it at install), in a cache
of its own, so that the figure is not the compiler's. With another checkout (a worktree of
the previous release, say), both are imported in alternation, round by round, so that the
machine's load hits both alike, and the difference is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_TIMED = (
    "import time; started = time.perf_counter(); "
    "import {module} as module; print((time.perf_counter() - started) * 1000); "
    "print(module.__file__)"
)


def import_ms(cases: dict[str, tuple[str, Path]], rounds: int) -> dict[str, float]:
    """Median milliseconds of each case's import, ``name: (module, checkout)``, over
    ``rounds`` rounds that take the cases in turn."""
    with tempfile.TemporaryDirectory(prefix="tgsession-imports-") as scratch:
        environments = {}
        for name, (_, checkout) in cases.items():
            environment = dict(os.environ, PYTHONPATH=str(checkout))
            # A cache per checkout: the same file names in two of them must not share one.
            environment["PYTHONPYCACHEPREFIX"] = str(Path(scratch) / str(len(environments)))
            environment.pop("PYTHONDONTWRITEBYTECODE", None)
            environments[name] = environment
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for round_ in range(rounds + 1):  # the first, untimed, compiles the bytecode
            # Every other round in the other order: no case always runs after the same one.
            for name in list(cases)[:: 1 if round_ % 2 else -1]:
                module, checkout = cases[name]
                result = subprocess.run(
                    [sys.executable, "-c", _TIMED.format(module=module)],
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=checkout,  # the checkout's own package, not one installed elsewhere
                    env=environments[name],
                )
                milliseconds, where = result.stdout.split()
                own = checkout / module
                if own.is_dir() and not Path(where).is_relative_to(own):
                    raise RuntimeError(f"{name}: {module} came from {where}, not from {own}")
                if round_:
                    samples[name].append(float(milliseconds))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", nargs="?", type=Path, help="another checkout to compare with")
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()
    cases = {"tgsession": ("tgsession", ROOT), "msgspec alone": ("msgspec", ROOT)}
    if args.other:
        if not (args.other / "tgsession").is_dir():
            parser.error(f"{args.other} has no tgsession package")
        cases["tgsession, other checkout"] = ("tgsession", args.other.resolve())
    results = import_ms(cases, args.rounds)
    for name, value in results.items():
        print(f"{name:<28}{value:>8.1f} ms")
    if args.other:
        difference = results["tgsession"] - results["tgsession, other checkout"]
        print(f"{'this checkout minus other':<28}{difference:>+8.1f} ms")


if __name__ == "__main__":
    main()
