"""The house rules that a machine checks: light imports, and the import contracts of pyproject.toml."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "scipy", "optuna", "matplotlib", "sklearn", "pyarrow", "dask", "psycopg", "cma", "numba")

LOADED = """
import json, sys
{code}
heavy = {heavy!r}
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))
"""


def loaded_heavy_modules(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has loaded after running ``code``."""
    script = LOADED.format(code=code, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("code", [
    "import stacker.layout",
    "import stacker",
    "import stacker.metrics, stacker.errors, stacker.runtime, stacker.redaction",
    "import stacker.layout.lock, stacker.layout.provenance",
    "from stacker.layout import collect, workspace",
])
def test_the_contract_imports_no_heavy_library(code):
    assert loaded_heavy_modules(code) == []


def test_stack_help_imports_no_heavy_library():
    code = """
import contextlib, io
from stacker.cli.app import app
with contextlib.redirect_stdout(io.StringIO()):
    for args in (["--help"], ["first-level", "--help"]):
        try:
            app(args)
        except SystemExit:
            pass
"""
    assert loaded_heavy_modules(code) == []


def test_public_api_names_resolve():
    import stacker

    assert set(stacker.__all__) == set(stacker._EXPORTS)
    for name in stacker.__all__:
        assert getattr(stacker, name) is not None
