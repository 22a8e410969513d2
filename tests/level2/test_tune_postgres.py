"""`stack tune` workers sharing one Optuna study on a real PostgreSQL server.

A throwaway server is started for the module: its own data folder in a temporary directory,
``initdb`` + ``pg_ctl`` as an unprivileged user (PostgreSQL refuses to run as root), listening on a
free loopback port only. The test skips, saying why, where the server binaries or psycopg are absent
(``.ci/run`` installs Debian's ``postgresql``; ``pip install -e .[postgres]`` installs psycopg).
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from stacker.cli.app import app
from stacker.errors import OptionError
from stacker.level2.storage import storage_url

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def server_binaries() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    candidates = ([Path(found).parent] if found else []) + sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """Start a throwaway PostgreSQL server; yield ``postgresql://stack@127.0.0.1:PORT/postgres``."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e .[postgres])")
    binaries = server_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
                    "/usr/lib/postgresql/*/bin; install Debian's postgresql package")
    run_as = {}
    if os.geteuid() == 0:   # initdb refuses root: run the server as nobody
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("running as root and there is no 'nobody' user to run PostgreSQL as")
        run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    home = Path(tempfile.mkdtemp(prefix="stack-postgres-"))
    if run_as:
        os.chown(home, run_as["user"], run_as["group"])
    data, log = home / "data", home / "server.log"
    env = {"PATH": f"{binaries}:{os.environ.get('PATH', '')}", "LC_ALL": "C", "LANG": "C"}

    def server(*args, check=True):
        return subprocess.run([str(binaries / args[0]), *args[1:]], cwd=home, env=env,
                              capture_output=True, text=True, timeout=120, check=check, **run_as)

    port = free_port()
    try:
        server("initdb", "-D", str(data), "-U", "stack", "-A", "trust", "--no-sync", "-E", "UTF8")
        with open(data / "postgresql.conf", "a") as conf:   # loopback only, no unix socket
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {port}\n"
                       "unix_socket_directories = ''\nfsync = off\nfull_page_writes = off\n")
        server("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "start")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        detail = getattr(error, "stderr", "") or ""
        if data.exists():
            server("pg_ctl", "-D", str(data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(home, ignore_errors=True)
        pytest.fail(f"could not start a PostgreSQL server from {binaries}: {error} {detail}")
    try:
        yield f"postgresql://stack@127.0.0.1:{port}/postgres"
    finally:
        server("pg_ctl", "-D", str(data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(home, ignore_errors=True)


def tune_worker(root: Path, url: str, *, seed: int, trials: int) -> subprocess.Popen:
    command = [sys.executable, "-c", "from stacker.cli.app import main; main()", "tune",
               "--root", str(root), "--storage", url, "--study", "shared", "--trials", str(trials),
               "--seed", str(seed), "--max-epochs", "1", "--device", "cpu"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(worker: subprocess.Popen) -> str:
    out, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, out + err
    return out


def load(storage: optuna.storages.RDBStorage) -> optuna.Study:
    return optuna.load_study(study_name="shared", storage=storage)


def assert_best_params_saved(root: Path, study: optuna.Study) -> None:
    saved = json.loads((root / ".stack" / "best_params.json").read_text())
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert saved["study"] == "shared" and saved["n_complete"] == len(complete)
    assert saved["cv"] == pytest.approx(study.best_value)
    assert {k: saved["params"][k] for k in study.best_params} == pytest.approx(study.best_params)


def test_workers_share_one_postgres_study_and_a_new_worker_resumes_it(small_layout, postgres_url):
    root = small_layout()
    storage = optuna.storages.RDBStorage(storage_url(postgres_url))
    # two worker processes at once, each with its own seed
    workers = [tune_worker(root, postgres_url, seed=s, trials=2) for s in (1, 2)]
    outputs = [finish(w) for w in workers]
    assert all("(2 finished in this run)" in out for out in outputs), outputs
    study = load(storage)
    assert sorted(t.number for t in study.trials) == list(range(4))   # none lost, none twice
    assert all(t.state in FINISHED for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4
    assert_best_params_saved(root, study)

    # a worker killed mid-study (its machine went down) ...
    killed = tune_worker(root, postgres_url, seed=3, trials=1000)
    deadline = time.monotonic() + 240
    while sum(t.state in FINISHED for t in load(storage).trials) < 5:
        assert killed.poll() is None and time.monotonic() < deadline, killed.communicate()
        time.sleep(0.5)
    killed.kill()
    killed.communicate()
    before = load(storage).trials
    # ... and a worker started afterwards (here in this process) resumes the study
    resumed = CliRunner().invoke(app, ["tune", "--root", str(root), "--storage", postgres_url,
                                       "--study", "shared", "--trials", "2", "--seed", "4",
                                       "--max-epochs", "1", "--device", "cpu"])
    assert resumed.exit_code == 0, resumed.output
    assert "(2 finished in this run)" in resumed.output
    after = load(storage)
    new = [t for t in after.trials if t.number not in {b.number for b in before}]
    assert len(new) == 2 and all(t.state in FINISHED for t in new)
    assert min(t.number for t in new) > max(t.number for t in before)
    finished_before = [t for t in before if t.state in FINISHED]
    assert sum(t.state in FINISHED for t in after.trials) == len(finished_before) + 2
    # the killed worker's unfinished trial is the only one left running
    assert sum(t.state == optuna.trial.TrialState.RUNNING for t in after.trials) <= 1
    assert_best_params_saved(root, after)


def test_postgresql_urls_use_psycopg_3():
    pytest.importorskip("psycopg")
    assert storage_url("postgresql://u:p@h:5/db") == "postgresql+psycopg://u:p@h:5/db"
    assert storage_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert storage_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert storage_url("sqlite:///x.db") == "sqlite:///x.db"


def test_a_missing_driver_is_named_with_the_install_command(monkeypatch):
    from stacker.level2 import storage

    monkeypatch.setattr(storage, "_installed", lambda module: False)
    with pytest.raises(OptionError, match=r"pip install -e '\.\[postgres\]'"):
        storage.storage_url("postgresql://u@h/db")
    with pytest.raises(OptionError, match="'psycopg' package"):
        storage.storage_url("postgresql+psycopg://u@h/db")


def test_an_unreachable_server_is_one_clear_error():
    pytest.importorskip("psycopg")
    from stacker.level2 import tune

    with pytest.raises(OptionError, match="cannot be reached"):
        tune.open_study(storage_url(f"postgresql://stack@127.0.0.1:{free_port()}/postgres"), "s",
                        direction="maximize", seed=0, attrs={"inputs": ["a"]}, retries=1)
