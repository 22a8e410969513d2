"""Passwords of storage URLs are masked in any text: the user part, the query string, libpq keywords."""

import pytest

from stacker.redaction import MASK, redact, remember_secrets, secrets_of

CASES = [
    ("postgresql://alice:s3cr3t@db-host:5432/optuna", "postgresql://alice:***@db-host:5432/optuna"),
    ("postgresql+psycopg://alice:s3cr3t@db/optuna?sslmode=require",
     "postgresql+psycopg://alice:***@db/optuna?sslmode=require"),
    ("sqlite:///t.db?password=s3cr3t", "sqlite:///t.db?password=***"),
    ("postgresql://db/optuna?user=alice&password=s3cr3t&sslmode=require",
     "postgresql://db/optuna?user=alice&password=***&sslmode=require"),
    ("host=db user=alice password=s3cr3t dbname=optuna", "host=db user=alice password=*** dbname=optuna"),
    ("host=db password = 'two words' dbname=optuna", "host=db password = *** dbname=optuna"),
    ("could not connect: `storage` 'postgresql://bob:hunter22@h/x' cannot be reached",
     "could not connect: `storage` 'postgresql://bob:***@h/x' cannot be reached"),
    ("no secret here: sqlite:///p/.stack/tune.db", "no secret here: sqlite:///p/.stack/tune.db"),
    ("postgresql://alice@db/optuna", "postgresql://alice@db/optuna"),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_redact_masks_every_form_of_password(text, expected):
    assert redact(text) == expected


def test_a_remembered_secret_is_masked_wherever_it_turns_up_later():
    remember_secrets("postgresql://carol:Xy%2Fz_42@db/optuna")
    assert "Xy/z_42" in secrets_of("postgresql://carol:Xy%2Fz_42@db/optuna")
    assert redact("driver said: password authentication failed (Xy/z_42)") == (
        f"driver said: password authentication failed ({MASK})")


def test_secrets_of_reads_all_three_places():
    assert set(secrets_of("postgresql://u:aaa1@h/d?password=bbb2")) >= {"aaa1", "bbb2"}
    assert secrets_of("host=h password=ccc3") == ["ccc3"]
    assert secrets_of("sqlite:///x.db") == []
