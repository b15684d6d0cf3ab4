"""Run mutmut's mutants one by one through its trampolines, each in a child forked from a Python that has
imported the libraries but run no test, and print a verdict per mutant.

Why not `mutmut run`: its forked runner reported killed mutants that pass every test when run alone
(bench/RESULTS_mutants.md, eleventh stop). Why not `mutmut apply NAME` by hand: it writes a method's
mutant over the first method of that name in the file, whichever class holds it. Here nothing is
written: the child sets MUTANT_UNDER_TEST and the trampolines in mutants/ pick the mutant.

    .venv/bin/mutmut run   # stop it once "Running stats" shows: the mutants are generated
    cd mutants && OMP_NUM_THREADS=1 ../.venv/bin/python ../bench/mutants_forked.py OUT "tests/test_model.py" NAME...

Appends "NAME killed|survived|errorN SECONDS" to OUT per mutant (pytest -x: exit 1 means a test failed).
"""

from __future__ import annotations

import os
import sys
import time


def main(out: str, tests: list[str], names: list[str]) -> None:
    sys.path.insert(0, os.getcwd())  # the mutated copy of the package, as mutmut's own runner does
    os.environ["MUTANT_UNDER_TEST"] = ""
    import numpy  # noqa: F401 - imported once here, so that each child starts at its tests
    import pytest
    import torch  # noqa: F401

    for name in names:
        t0 = time.time()
        pid = os.fork()
        if pid == 0:  # the child: its output would drown the verdicts
            os.environ["MUTANT_UNDER_TEST"] = name
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            os._exit(int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests])))
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        verdict = {0: "survived", 1: "killed"}.get(code, f"error{code}")
        with open(out, "a") as f:
            f.write(f"{name} {verdict} {time.time() - t0:.1f}\n")
        print(name, verdict, flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2].split(), sys.argv[3:])
