"""Storage URLs for shared Optuna studies: the PostgreSQL forms users write, made usable.

SQLAlchemy reads ``postgresql://`` (and ``postgres://``) as "PostgreSQL through psycopg2", which is
not what the ``postgres`` extra installs: it installs psycopg 3, whose SQLAlchemy name is
``postgresql+psycopg://``. So a URL without a driver is given psycopg 3 when that is installed
(psycopg2 otherwise); a URL that names its driver is left as it is.
"""

from __future__ import annotations

import importlib.util

from stacker.errors import OptionError

_BARE_SCHEMES = ("postgresql://", "postgres://")
_DRIVERS = {"psycopg": "psycopg", "psycopg2": "psycopg2", "pg8000": "pg8000",
            "asyncpg": "asyncpg"}
INSTALL_HINT = "pip install -e '.[postgres]' (psycopg 3)"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def storage_url(url: str) -> str:
    """``url`` as SQLAlchemy should read it: ``postgresql://...`` -> ``postgresql+psycopg://...``
    when psycopg 3 is installed; OptionError when the PostgreSQL driver it needs is missing."""
    if url.startswith(_BARE_SCHEMES):
        rest = url.split("://", 1)[1]
        if _installed("psycopg"):
            return f"postgresql+psycopg://{rest}"
        if _installed("psycopg2"):
            return f"postgresql://{rest}"
        raise OptionError(f"--storage {url.split('://', 1)[0]}://... needs a PostgreSQL driver; "
                          f"{INSTALL_HINT}")
    scheme = url.split("://", 1)[0]
    if scheme.startswith(("postgresql+", "postgres+")):
        driver = scheme.split("+", 1)[1]
        module = _DRIVERS.get(driver)
        if module is not None and not _installed(module):
            raise OptionError(f"--storage {scheme}://... needs the '{module}' package, which is "
                              f"not installed; {INSTALL_HINT}, and write postgresql://...")
    return url


__all__ = ["storage_url"]
