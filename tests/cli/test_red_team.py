"""The red-team table: bad input and faults across every command, as a new user meets them.

Files from Excel (a byte-order mark, ';' as delimiter, UTF-16, a trailing comma on every line),
from Windows (latin-1 bytes), from another team's code (gzip or zip named .csv, NaN, values a hair
over 1) and from a crashed job (a folder where a file was, a symlink loop, an unreadable file, a
half-written .npy). Each row: the command, the damage, the exit code and a fragment of the one-line
message. Every row also checks: no traceback, and every file the user had is byte-identical after
the command (hashed before and after); a refused command leaves no new file outside ``.stack/``.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
from typer.testing import CliRunner

from stacker import layout
from stacker.cli.app import app

CLASSES = ["class_a", "class_b", "class_c", "class_d"]
TINY = {"max_epochs": 2, "hidden": 8}


@dataclass
class P:
    """One small project: a layout, features, labels, a template, tiny audio, a params file."""

    tmp: Path
    root: Path
    monkeypatch: pytest.MonkeyPatch
    cleanups: list = field(default_factory=list)   # run after the command (a lock holder to stop)

    def __getattr__(self, name):        # p.labels -> tmp/labels.csv, etc.
        files = {"labels": "labels.csv", "train": "train.csv", "test": "test.csv",
                 "template": "template.csv", "params": "params.json", "meta": "meta.csv",
                 "audio": "audio", "out": "submission.csv", "report": "report.html",
                 "folds": "layout/folds.csv", "classes": "layout/classes.txt",
                 "oof": "oof.npy", "test_preds": "test_preds.npy"}
        if name in files:
            return self.tmp / files[name]
        raise AttributeError(name)

    def probs(self, name="sim_001", fold=1, split="val") -> Path:
        return layout.probs_path(self.root, name, fold, split)


@pytest.fixture
def project(tmp_path, small_layout, monkeypatch) -> P:
    root = small_layout()
    p = P(tmp=tmp_path, root=root, monkeypatch=monkeypatch)
    folds = layout.read_folds(root)
    rng = np.random.default_rng(0)
    pd.DataFrame({"fname": folds.ids, "labels": [",".join(r) for r in folds.labels]}).to_csv(
        p.labels, index=False)
    features = lambda ids: pd.DataFrame(rng.normal(size=(len(ids), 3)), columns=["f1", "f2", "f3"]) \
        .assign(fname=ids)[["fname", "f1", "f2", "f3"]]
    features(folds.ids).to_csv(p.train, index=False)
    test_ids = [f"test_{i:05d}" for i in range(20)]
    features(test_ids).to_csv(p.test, index=False)
    template = pd.DataFrame({"fname": test_ids, **{c: 0.0 for c in CLASSES}})
    template.to_csv(p.template, index=False)
    p.params.write_text(json.dumps(TINY))
    p.audio.mkdir()
    for i in range(3):
        t = np.arange(800) / 8000
        soundfile.write(str(p.audio / f"a{i}.wav"), (0.3 * np.sin(2 * np.pi * 440 * (i + 1) * t))
                        .astype(np.float32), 8000, subtype="PCM_16")
    p.meta.write_text("fname,labels\na0.wav,class_a\na1.wav,class_b\na2.wav,class_c\n")
    # a notebook's arrays for `stack import` (rows in folds.csv order, columns in classes.txt order)
    np.save(p.oof, np.clip(folds.y * 0.6 + rng.uniform(0, 0.4, size=folds.y.shape), 0, 1))
    np.save(p.test_preds, rng.uniform(size=(len(test_ids), len(CLASSES))))
    # per-window predictions of sim_000 (val rows): 3 windows x 4 classes in [0, 1]
    for k in folds.fold_numbers:
        for row_id in folds.ids[folds.rows_of_fold(k)]:
            layout.atomic_save_npy(layout.windows_path(root, "sim_000", k, "val", row_id),
                                   rng.uniform(size=(3, 4)).astype(np.float32))
    return p


# ---------------------------------------------------------------- damage


def latin1(path: Path):
    """Windows: the same text re-encoded as latin-1, with an accented id."""
    def damage(p: P):
        target = path(p)
        text = target.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        lines[1] = lines[1].replace("row_", "rów_", 1).replace("test_", "tést_", 1) \
            .replace("a0", "á0", 1)
        target.write_bytes("".join(lines).encode("latin-1"))
    return damage


def gzipped(path):
    def damage(p: P):
        target = path(p)
        target.write_bytes(gzip.compress(target.read_bytes()))
    return damage


def zipped(path):
    def damage(p: P):
        target = path(p)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(target.name, target.read_bytes())
        target.write_bytes(buffer.getvalue())
    return damage


def utf16(path):
    def damage(p: P):
        target = path(p)
        target.write_bytes(target.read_text().replace(",", "\t").encode("utf-16"))
    return damage


def delimited(path, delimiter=";"):
    def damage(p: P):
        target = path(p)
        frame = pd.read_csv(target, dtype=str, keep_default_na=False)
        target.write_text(frame.to_csv(index=False, sep=delimiter))
    return damage


def replace_text(path, old, new, count=1):
    def damage(p: P):
        target = path(p)
        text = target.read_text()
        assert old in text, (target, old)
        target.write_text(text.replace(old, new, count))
    return damage


def write(path, content):
    def damage(p: P):
        target = path(p)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return damage


def folder_instead(path):
    def damage(p: P):
        target = path(p)
        target.unlink()
        target.mkdir()
    return damage


def symlink_loop(path):
    def damage(p: P):
        target = path(p)
        target.unlink()
        os.symlink(target.name, target)
    return damage


def unreadable(path):
    def damage(p: P):
        if os.geteuid() == 0:
            pytest.skip("root reads every file")
        path(p).chmod(0)
    return damage


def excel(path):
    """Excel's 'CSV UTF-8': a byte-order mark, CRLF line ends, a trailing comma on every line."""
    def damage(p: P):
        target = path(p)
        lines = target.read_text(encoding="utf-8").splitlines()
        target.write_bytes(b"\xef\xbb\xbf" + "".join(f"{line},\r\n" for line in lines).encode())
    return damage


def no_labels(fold=None):
    """Blank the labels of every row (or of one fold); classes.txt keeps the classes."""
    def damage(p: P):
        p.classes.write_text("".join(f"{c}\n" for c in CLASSES))
        frame = pd.read_csv(p.folds, dtype=str, keep_default_na=False)
        rows = frame.index if fold is None else frame.index[frame["fold"] == str(fold)]
        frame.loc[rows, "labels"] = ""
        p.folds.write_text(frame.to_csv(index=False))
    return damage


def window_value(value, *, raw=None, dtype=None):
    def damage(p: P):
        folds = layout.read_folds(p.root)
        row_id = folds.ids[folds.rows_of_fold(1)][2]
        path = layout.windows_path(p.root, "sim_000", 1, "val", row_id)
        if raw is not None:
            path.write_bytes(raw)
            return
        array = np.load(path)
        array = array if dtype is None else array.astype(dtype)
        array[1, 2] = value
        np.save(path, array)
    return damage


def meta_level(value):
    def damage(p: P):
        path = p.root / "sim_001" / "meta.json"
        meta = json.loads(path.read_text())
        meta["level"] = value
        path.write_text(json.dumps(meta))
    return damage


def _set_feature(value):
    def damage(p: P):
        frame = pd.read_csv(p.train, dtype=str)
        frame.loc[3, "f2"] = value
        p.train.write_text(frame.to_csv(index=False))
    return damage


def interrupt(target):
    """Ctrl-C inside the command: the named library function raises KeyboardInterrupt."""
    def damage(p: P):
        def raiser(*args, **kwargs):
            raise KeyboardInterrupt
        p.monkeypatch.setattr(__import__(target[0], fromlist=["x"]), target[1], raiser)
    return damage


def bug(target):
    """Our own bug inside the command: one line that says how to get the traceback, exit 2."""
    def damage(p: P):
        def raiser(*args, **kwargs):
            raise ZeroDivisionError("division by zero")
        p.monkeypatch.setattr(__import__(target[0], fromlist=["x"]), target[1], raiser)
    return damage


def first_sklearn_run_then(change):
    """A finished first-level run, then its input data changes (a crashed job's rerun)."""
    def damage(p: P):
        done = CliRunner().invoke(app, SKLEARN(p))
        assert done.exit_code == 0, done.output
        change(p)
    return damage


def locked_by(command="stack auto", shared=False):
    """Another process is writing the layout: it holds ``<root>/.stack/lock`` until the row ends
    (``shared``: as a `stack tune` worker does)."""
    def damage(p: P):
        code = textwrap.dedent(f"""
            import sys
            from stacker.layout.lock import root_lock
            with root_lock({str(p.root)!r}, {command!r}, shared={shared!r}):
                print("held", flush=True)
                sys.stdin.read()
        """)
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "held"
        p.cleanups.append(lambda: (child.stdin.close(), child.wait(timeout=30)))
    return damage


def no_numba_cache(p: P):
    """A read-only install and an unusable HOME: numba finds no folder for its on-disk cache."""
    numba_caching = pytest.importorskip("numba.core.caching")
    from stacker.search import kernel

    p.monkeypatch.setattr(numba_caching.CacheImpl, "_locator_classes", [])
    p.monkeypatch.setattr(kernel, "_KERNEL", None)


def npy_value(path, value):
    """One value of a saved array set to ``value``."""
    def damage(p: P):
        array = np.load(path(p))
        array[3, 1] = value
        np.save(path(p), array)
    return damage


def slow_stage(p: P):
    """Collecting takes 2.5 s (a slow disk): any run is then far over a budget of 0.01 s."""
    import importlib
    import time

    for where in ("stacker.auto.pipeline", "stacker.auto"):   # the package, or the old module
        try:
            auto = importlib.import_module(where)
        except ImportError:
            continue
        if hasattr(auto, "collect"):
            break
    real = auto.collect

    def slow(*args, **kwargs):
        time.sleep(2.5)
        return real(*args, **kwargs)

    p.monkeypatch.setattr(auto, "collect", slow)


def both(*damages):
    def damage(p: P):
        for d in damages:
            d(p)
    return damage


def nothing(p: P):
    pass


# ---------------------------------------------------------------- commands

def MAKE_FOLDS(p, *extra, root=None):
    return ["make-folds", p.labels, "--n-folds", "3", "--root", root or p.tmp / "fresh", *extra]


def COLLECT(p, *extra):
    return ["collect", "--root", p.root, "--no-cache", *extra]


def SEARCH(p, *extra):
    return ["search-subsets", "--root", p.root, "--method", "greedy", "--n-jobs", "1", *extra]


def TUNE(p, *extra):
    return ["tune", "--root", p.root, "--trials", "1", "--max-epochs", "2", *extra]


def TRAIN(p, *extra):
    return ["train", "--root", p.root, "--name", "l2", "--params", p.params, "--device", "cpu",
            "--subset", "sim_000,sim_001", *extra]


def PREDICT(p, *extra):
    return ["predict", "--root", p.root, *extra]


def BLEND(p, *extra):
    return ["blend", "--geo-mean", "--root", p.root, "--subset", "all", "--template", p.template,
            "--out", p.out, *extra]


def WEIGHTS(p, *extra):
    return ["blend", "--weights", "--root", p.root, "--subset", "best", "--out", p.out, *extra]


def searched_then(edit):
    """A weighted subset search (GES) over every experiment, then ``.stack/subsets.json`` edited."""
    def damage(p: P):
        done = CliRunner().invoke(app, [str(a) for a in SEARCH(p, "--method", "ges",
                                                               "--max-size", "3")])
        assert done.exit_code == 0, done.output
        path = p.root / layout.STACK_DIR / "subsets.json"
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    return damage


def REPORT(p, *extra):
    return ["report", "--root", p.root, "--out", p.report, *extra]


def AUTO(p, *extra):
    return ["auto", "--root", p.root, "--n-level2", "0", "--time-budget", "5", "--out", p.out,
            "--report", p.report, "--device", "cpu", *extra]


def SKLEARN(p, *extra, estimator="logreg"):
    return ["first-level", "sklearn", "--train", p.train, "--test", p.test, "--estimator", estimator,
            "--name", "sk", "--root", p.root, *extra]


def AUDIO(p, *extra):
    return ["first-level", "audio", "--meta", p.meta, "--audio-dir", p.audio, "--test-dir", p.audio,
            "--name", "cnn", "--root", p.root, "--epochs", "1", *extra]


def IMPORT(p, *extra, name="mine", test_ids=True):
    return ["import", name, "--oof", p.oof, "--test", p.test_preds, "--root", p.root,
            *(["--test-ids", p.template] if test_ids else []), *extra]


def FEATURES(p, *extra):
    return ["first-level", "audio-features", "--meta", p.meta, "--audio-dir", p.audio,
            "--out", p.tmp / "feat.csv", "--root", p.root, *extra]


labels = lambda p: p.labels
folds_csv = lambda p: p.folds
classes_txt = lambda p: p.classes
template = lambda p: p.template
train_csv = lambda p: p.train
features_test = lambda p: p.test
meta_csv = lambda p: p.meta
params_json = lambda p: p.params
probs = lambda p: p.probs()
probs_test = lambda p: p.probs(split="test")
meta_json = lambda p: p.root / "sim_001" / "meta.json"
NOT_UTF8 = "is not UTF-8 text"
LOCKED = "is being written by `stack auto` (pid"

def _set_first_value(text):
    def damage(p: P):
        lines = p.probs().read_text().splitlines(keepends=True)
        fields = lines[1].rstrip("\n").split(",")
        fields[1] = text
        lines[1] = ",".join(fields) + "\n"
        p.probs().write_text("".join(lines))
    return damage



# (id, command, damage, exit code, message fragment)
ROWS = [
    # ---- make-folds: the labels CSV from Excel, Windows and other teams
    ("make-folds latin-1 labels", MAKE_FOLDS, latin1(labels), 1, NOT_UTF8),
    ("make-folds gzip labels", MAKE_FOLDS, gzipped(labels), 1, "is a gzip archive"),
    ("make-folds zip labels", MAKE_FOLDS, zipped(labels), 1, "is a zip archive"),
    ("make-folds utf-16 labels", MAKE_FOLDS, utf16(labels), 1, "is UTF-16 text"),
    ("make-folds semicolon labels", MAKE_FOLDS, delimited(labels), 1, "delimiter ';'"),
    ("make-folds tab labels", MAKE_FOLDS, delimited(labels, "\t"), 1, "delimiter tab"),
    ("make-folds empty labels", MAKE_FOLDS, write(labels, ""), 1, "is empty"),
    ("make-folds labels is a folder", MAKE_FOLDS, folder_instead(labels), 1, "is a folder"),
    ("make-folds labels symlink loop", MAKE_FOLDS, symlink_loop(labels), 1, "cannot be read"),
    ("make-folds wrong label column", lambda p: MAKE_FOLDS(p, "--label-column", "label"), nothing,
     1, "no column 'label' for --label-column"),
    ("make-folds one fold", lambda p: MAKE_FOLDS(p, "--n-folds", "1"), nothing, 1, "at least 2"),
    ("make-folds negative seed", lambda p: MAKE_FOLDS(p, "--seed", "-1"), nothing, 1,
     "--seed must be 0 or more, got -1"),
    ("make-folds duplicate id", MAKE_FOLDS, replace_text(labels, "row_001.wav", "row_000.wav"), 1,
     "id 'row_000.wav' appears 2 times"),
    ("make-folds over a folds.csv experiments use", lambda p: MAKE_FOLDS(p, root=p.root), nothing,
     1, "folds.csv exists and is used by 3 experiment(s)"),
    ("make-folds over an unused folds.csv", lambda p: MAKE_FOLDS(p, "--n-folds", "4",
                                                                 root=p.tmp / "other"),
     lambda p: layout.write_folds(p.tmp / "other", ["x", "y"], [("a",), ("b",)], [0, 1]), 1,
     "folds.csv exists; new folds would replace it"),
    ("make-folds label not in the user's classes.txt", lambda p: MAKE_FOLDS(p, root=p.tmp / "other"),
     lambda p: (p.tmp / "other").mkdir() or (p.tmp / "other" / "classes.txt").write_text(
         "class_d\nclass_c\nclass_b\n"), 1, "label 'class_a' of"),
    ("make-folds reads an Excel export", MAKE_FOLDS, excel(labels), 0, "wrote"),
    # ---- collect
    ("collect reads Excel exports", COLLECT, both(excel(folds_csv), excel(probs), excel(probs_test)),
     0, "3 experiment(s), 60 rows"),
    ("collect latin-1 folds.csv", COLLECT, latin1(folds_csv), 1, NOT_UTF8),
    ("collect gzip folds.csv", COLLECT, gzipped(folds_csv), 1, "gzip archive"),
    ("collect semicolon folds.csv", COLLECT, delimited(folds_csv), 1, "delimiter ';'"),
    ("collect utf-16 folds.csv", COLLECT, utf16(folds_csv), 1, "UTF-16"),
    ("collect latin-1 classes.txt", COLLECT,
     write(classes_txt, "class_a\nclass_b\nclass_c\nclass_d\ncläss_e\n".encode("latin-1")), 1,
     "classes file is not UTF-8 text"),
    ("collect strict latin-1 probs", lambda p: COLLECT(p, "--strict"), latin1(probs), 1,
     "experiment 'sim_001'"),
    ("collect strict gzip probs", lambda p: COLLECT(p, "--strict"), gzipped(probs), 1,
     "predictions file is a gzip archive"),
    ("collect strict value a hair over 1", lambda p: COLLECT(p, "--strict"),
     _set_first_value("1.0000001"), 1, "value is 1.0000001, outside [0, 1]"),
    ("collect strict level not a number", lambda p: COLLECT(p, "--strict"), meta_level("two"), 1,
     '"level" is "two"'),
    ("collect strict meta.json latin-1", lambda p: COLLECT(p, "--strict"),
     write(meta_json, '{"model": "caf\xe9"}'.encode("latin-1")), 1, "meta.json is not UTF-8"),
    ("collect strict probs.csv is a folder", lambda p: COLLECT(p, "--strict"),
     folder_instead(probs), 1, "is a folder"),
    ("collect skips probs.csv that is a folder", COLLECT, folder_instead(probs), 0,
     "skipped experiment 'sim_001'"),
    ("collect skips a symlink loop", COLLECT, symlink_loop(probs), 0, "skipped experiment 'sim_001'"),
    ("collect skips an unreadable file", COLLECT, unreadable(probs), 0, "cannot be read"),
    ("collect skips a gzip probs", COLLECT, gzipped(probs_test), 0, "gzip archive"),
    ("collect skips a latin-1 probs", COLLECT, latin1(probs), 0, NOT_UTF8),
    ("collect skips a non-integer level", COLLECT, meta_level(1.5), 0, '"level" is 1.5'),
    ("collect missing root", lambda p: ["collect", "--root", p.tmp / "nowhere"], nothing, 1,
     "folds file is missing"),
    # ---- search-subsets
    ("search no labelled row", SEARCH, no_labels(), 1, "metric lwlrap is undefined"),
    ("search a class-free fold", SEARCH, no_labels(fold=1), 1, "undefined on fold 1"),
    ("search latin-1 folds.csv", SEARCH, latin1(folds_csv), 1, NOT_UTF8),
    ("search unknown metric", lambda p: SEARCH(p, "--metric", "f1"), nothing, 1, "unknown metric"),
    ("search ctrl-c", SEARCH, interrupt(("stacker.search.engine", "search_arrays")), 130,
     "interrupted; rerun to resume"),
    ("search-subsets with no writable numba cache", SEARCH, no_numba_cache, 0,
     "written"),
    # ---- tune
    ("tune storage folder missing",
     lambda p: TUNE(p, "--storage", f"sqlite:///{p.tmp}/no/such/dir/t.db"), nothing, 1,
     "does not exist"),
    ("tune no labelled row", TUNE, no_labels(), 1, "undefined"),
    ("tune holdout fold not a fold", lambda p: TUNE(p, "--holdout-fold", "7"), nothing, 1,
     "--holdout-fold 7 is not a fold"),
    ("tune ctrl-c", TUNE, interrupt(("stacker.level2.tune", "tune")), 130,
     "interrupted; rerun to resume"),
    ("tune gzip folds.csv", TUNE, gzipped(folds_csv), 1, "gzip archive"),
    ("tune seed -1", lambda p: TUNE(p, "--seed", "-1"), nothing, 1, "--seed must be 0 or more"),
    ("tune timeout nan", lambda p: TUNE(p, "--timeout", "nan"), nothing, 1,
     "--timeout must be a positive, finite number of seconds, got nan"),
    ("tune timeout -5", lambda p: TUNE(p, "--timeout", "-5"), nothing, 1, "got -5"),
    ("tune storage is folds.csv", lambda p: TUNE(p, "--storage", f"sqlite:///{p.folds}"), nothing,
     1, "folds.csv is the layout's folds.csv, written by `stack make-folds`"),
    ("tune storage is the template", lambda p: TUNE(p, "--storage", f"sqlite:///{p.template}"),
     nothing, 1, "template.csv is not an SQLite database"),
    ("tune storage inside an experiment",
     lambda p: TUNE(p, "--storage", f"sqlite:///{p.root}/sim_000/t.db"), nothing, 1,
     "is inside experiment 'sim_000' of the layout"),
    ("tune storage in .stack/ is tune's own",
     lambda p: TUNE(p, "--storage", f"sqlite:///{p.root}/.stack/mine.db"), nothing, 0,
     "best params saved"),
    ("train on a scheduler address with no host", lambda p: TRAIN(p, "--scheduler", "tcp://"),
     nothing, 1, "no host in the address; write tcp://HOST:PORT"),
    ("tune storage is a folder", lambda p: TUNE(p, "--storage", f"sqlite:///{p.audio}"), nothing,
     1, "audio is a folder"),
    # ---- train
    ("train NaN in a window", TRAIN, window_value(np.nan), 1, "value is NaN or infinite"),
    ("train window above 1", TRAIN, window_value(1.5), 1, "value is 1.5, outside [0, 1]"),
    ("train float64 window of 1e39", TRAIN, window_value(1e39, dtype=np.float64), 1,
     "value is 1e+39, outside [0, 1]"),
    ("train window below 0", TRAIN, window_value(-0.25), 1, "value is -0.25, outside [0, 1]"),
    ("train half-written window", TRAIN, window_value(None, raw=b"\x93NUMPY\x01\x00v"), 1,
     "not a readable .npy"),
    ("train no labelled row", TRAIN, no_labels(), 1, "metric lwlrap is undefined"),
    ("train a class-free fold", TRAIN, no_labels(fold=2), 1, "undefined on fold 2"),
    ("train name is an input with force", lambda p: TRAIN(p, "--name", "sim_000", "--force"),
     nothing, 1, "is one of the input experiments"),
    ("train latin-1 params", TRAIN, write(params_json, '{"max_epochs": 2, "é": 1}'.encode("latin-1")),
     1, "not UTF-8"),
    ("train params not JSON", TRAIN, write(params_json, "{max_epochs: 2"), 1, "not valid JSON"),
    ("train bad seeds", lambda p: TRAIN(p, "--seeds", "a,b"), nothing, 1, "--seeds must be integers"),
    ("train ctrl-c", TRAIN, interrupt(("stacker.level2.fit", "train_level2")), 130,
     "interrupted; rerun to resume"),
    ("train our bug", TRAIN, bug(("stacker.level2.fit", "train_level2")), 2,
     "internal error (ZeroDivisionError: division by zero); this is a bug in stack"),
    ("train seed -1", lambda p: TRAIN(p, "--seeds", "0,-1"), nothing, 1,
     "--seeds must be 0 or more"),
    # ---- predict
    ("predict unknown experiment", lambda p: PREDICT(p, "--name", "ghost"), nothing, 1, "ghost"),
    ("predict a level-1 experiment", lambda p: PREDICT(p, "--name", "sim_000"), nothing, 1,
     "sim_000"),
    ("predict latin-1 folds.csv", lambda p: PREDICT(p, "--name", "sim_000"), latin1(folds_csv), 1,
     NOT_UTF8),
    # ---- blend
    ("blend out is the template, with force", lambda p: BLEND(p, "--out", p.template, "--force"),
     nothing, 1, "an input of this command"),
    ("blend out is folds.csv, with force", lambda p: BLEND(p, "--out", p.folds, "--force"),
     nothing, 1, "an input of this command"),
    ("blend out is an experiment's test probs, with force",
     lambda p: BLEND(p, "--out", p.probs("sim_000", split="test"), "--force"), nothing, 1,
     "is inside experiment 'sim_000' of the layout"),
    ("blend out makes a new fold folder",
     lambda p: BLEND(p, "--out", p.root / "mine" / "fold_0" / "test" / "probs.csv"), nothing, 1,
     "is inside experiment 'mine' of the layout"),
    ("blend out is an experiment's meta.json, with force",
     lambda p: BLEND(p, "--out", p.root / "sim_001" / "meta.json", "--force"), nothing, 1,
     "inside experiment 'sim_001'"),
    ("blend out is the leaderboard in .stack/, with force",
     lambda p: BLEND(p, "--out", p.root / ".stack" / "leaderboard.csv", "--force"),
     lambda p: CliRunner().invoke(app, ["collect", "--root", str(p.root)]), 1,
     "inside .stack/, the workspace of `stack collect`"),
    ("blend out is a symlink to an experiment's probs, with force",
     lambda p: BLEND(p, "--out", p.tmp / "link.csv", "--force"),
     lambda p: os.symlink(p.probs("sim_002", split="test"), p.tmp / "link.csv"), 1,
     "inside experiment 'sim_002'"),
    ("blend out beside folds.csv in the root", lambda p: BLEND(p, "--out", p.root / "sub.csv"),
     nothing, 0, "written"),
    ("blend --weights that sum to infinity", WEIGHTS, searched_then(lambda r: {
        **r, "members": ["sim_000", "sim_001", "sim_002"],
        "weights": {"sim_000": 1e308, "sim_001": 1e308, "sim_002": 1e308}}), 1,
     "subsets.json: weights sum to infinity"),
    ("blend --weights edited by hand", WEIGHTS, searched_then(lambda r: {
        **r, "members": ["sim_000", "sim_001"], "weights": {"sim_000": 1.0, "sim_001": 8.0}}), 0,
     "no nested CV: this blend's CV"),
    ("blend --weights as searched", WEIGHTS, searched_then(lambda r: r), 0,
     "nested CV (from the subset search)"),
    ("blend without a template says its column order",
     lambda p: ["blend", "--geo-mean", "--root", p.root, "--subset", "all", "--out", p.out],
     nothing, 0, "no --template: the columns follow classes.txt's order (class_a, class_b"),
    ("blend latin-1 template", BLEND, latin1(template), 1, "template is not UTF-8"),
    ("blend gzip template", BLEND, gzipped(template), 1, "template is a gzip archive"),
    ("blend semicolon template", BLEND, delimited(template), 1, "delimiter ';'"),
    ("blend template missing", BLEND, lambda p: p.template.unlink(), 1, "template file not found"),
    ("blend template of another test set", BLEND, replace_text(template, "test_00003", "test_x"), 1,
     "template ids are not the layout's test ids"),
    ("blend reads an Excel template", BLEND, excel(template), 0, "written"),
    ("blend out exists", BLEND, write(lambda p: p.out, "mine\n"), 1, "exists; pass --force"),
    ("blend full disk", BLEND, lambda p: full_disk(p), 1, "No space left on device ("),
    # ---- report
    ("report gzip folds.csv", REPORT, gzipped(folds_csv), 1, "gzip archive"),
    ("report out exists", REPORT, write(lambda p: p.report, "mine"), 1, "exists"),
    ("report out is an experiment's probs, with force",
     lambda p: REPORT(p, "--out", p.probs(), "--force"), nothing, 1,
     "is inside experiment 'sim_001'"),
    ("report out is folds.csv", lambda p: REPORT(p, "--out", p.folds, "--force"), nothing, 1,
     "an input of this command"),
    # ---- auto
    ("auto no labelled row", AUTO, no_labels(), 1, "undefined"),
    ("auto gzip folds.csv", AUTO, gzipped(folds_csv), 1, "gzip archive"),
    ("auto out is the template, with force",
     lambda p: AUTO(p, "--template", p.template, "--out", p.template, "--force"), nothing, 1,
     "an input of this command"),
    ("auto report is inside an experiment, with force",
     lambda p: AUTO(p, "--report", p.root / "sim_000" / "report.html", "--force"), nothing, 1,
     "is inside experiment 'sim_000' of the layout"),
    ("auto out is in .stack/, with force",
     lambda p: AUTO(p, "--out", p.root / ".stack" / "subsets.json", "--force"), nothing, 1,
     "the workspace of `stack search-subsets`"),
    ("auto time budget nan", lambda p: AUTO(p, "--time-budget", "nan"), nothing, 1,
     "--time-budget must be a positive, finite number of seconds, got nan"),
    ("auto time budget inf", lambda p: AUTO(p, "--time-budget", "inf"), nothing, 1,
     "got inf"),
    ("auto trials -1", lambda p: AUTO(p, "--trials", "-1"), nothing, 1,
     "--trials must be 0 or more"),
    ("auto far over a tiny time budget", lambda p: AUTO(p, "--time-budget", "0.01"), slow_stage,
     0, "over --time-budget 0.01 s"),
    ("auto time budget 0", lambda p: AUTO(p, "--time-budget", "0"), nothing, 1, "got 0"),
    ("auto bad template refused before any stage but collect",
     lambda p: AUTO(p, "--template", p.template), both(
         replace_text(template, "test_00003", "test_x"),
         bug(("stacker.auto.pipeline", "level1_recipes"))), 1,
     "template ids are not the layout's test ids"),
    ("auto out is the user's file", AUTO, write(lambda p: p.out, "mine\n"), 1,
     "was not written by stack auto"),
    # ---- import
    ("import a name with a trailing space", lambda p: IMPORT(p, name="cnn "), nothing, 1,
     "experiment name 'cnn ' must be a plain folder name that --subset can select"),
    ("import a name with a comma", lambda p: IMPORT(p, name="cnn,v2"), nothing, 1,
     "no ',', '/' or"),
    ("import --force onto a symlinked experiment", lambda p: IMPORT(p, "--force", name="linked"),
     lambda p: os.symlink(p.root / "sim_000", p.root / "linked"), 1,
     "experiment 'linked' under"),
    ("import a value of 1e39", IMPORT, npy_value(lambda p: p.oof, 1e39), 1,
     "value 1e+39 is outside [0, 1], so these look like logits"),
    ("import a value of -1e-9 (rounding)", IMPORT, npy_value(lambda p: p.oof, -1e-9), 0,
     "imported 'mine'"),
    ("import a value of -0.01", IMPORT, npy_value(lambda p: p.oof, -0.01), 1,
     "--from-logits sigmoid"),
    ("import without --test-ids beside named test rows", lambda p: IMPORT(p, test_ids=False),
     nothing, 1,
     "the test rows are numbered 0..19 (no --test-ids) but experiment 'sim_000' predicts"),
    ("import with another test set",
     lambda p: IMPORT(p, "--test-ids", p.tmp / "tids.csv", test_ids=False),
     lambda p: (p.tmp / "tids.csv").write_text(
         "fname\n" + "".join(f"other_{i}\n" for i in range(20))), 1,
     "test ids differ from experiment 'sim_000''s ('test_00000' missing)"),
    ("import OOF that are the labels", IMPORT,
     lambda p: np.save(p.oof, layout.read_folds(p.root).y.astype(float)), 0,
     "warning: the OOF predictions equal the labels of folds.csv"),
    ("sklearn --force onto a symlinked experiment", lambda p: SKLEARN(p, "--force"),
     lambda p: os.symlink(p.root / "sim_000", p.root / "sk"), 1, "is a symbolic link to"),
    ("train --force onto a symlinked experiment", lambda p: TRAIN(p, "--force"),
     lambda p: os.symlink(p.root / "sim_002", p.root / "l2"), 1, "is a symbolic link to"),
    # ---- first-level sklearn
    ("sklearn latin-1 features", SKLEARN, latin1(train_csv), 1, NOT_UTF8),
    ("sklearn semicolon features", SKLEARN, delimited(train_csv), 1, "delimiter ';'"),
    ("sklearn zip test features", SKLEARN, zipped(features_test), 1, "zip archive"),
    ("sklearn NaN feature", SKLEARN, _set_feature("nan"), 1, "is empty or NaN"),
    ("sklearn infinite feature", SKLEARN, _set_feature("inf"), 1, "is infinite"),
    ("sklearn empty module:Class", lambda p: SKLEARN(p, estimator=":"), nothing, 1,
     "give both parts of module:Class"),
    ("sklearn empty class", lambda p: SKLEARN(p, estimator="sklearn.svm:"), nothing, 1,
     "give both parts of module:Class"),
    ("sklearn estimator without predict_proba",
     lambda p: SKLEARN(p, estimator="sklearn.svm:LinearSVC"), nothing, 1, "has no predict_proba"),
    ("sklearn SVC without probability", lambda p: SKLEARN(p, estimator="sklearn.svm:SVC"), nothing,
     1, "has no predict_proba"),
    ("sklearn resume on changed features", SKLEARN, first_sklearn_run_then(_set_feature("0.5")), 1,
     "was made on other input data"),
    ("sklearn resume into a meta.json of the user's", SKLEARN,
     first_sklearn_run_then(lambda p: ((p.root / "sk" / "meta.json").write_text(
         '{"level": 1, "notes": "mine"}'), __import__("shutil").rmtree(p.root / "sk" / "fold_2"))),
     1, "records no model, params, seed, data_hash"),
    ("sklearn resume with another seed", lambda p: SKLEARN(p, "--seed", "3"),
     first_sklearn_run_then(lambda p: __import__("shutil").rmtree(p.root / "sk" / "fold_2")), 1,
     "was made with seed 0, not 3"),
    ("sklearn other test columns", SKLEARN, replace_text(features_test, "f3", "g3"), 1,
     "same columns"),
    ("sklearn params not JSON", lambda p: SKLEARN(p, "--params", "{C: 1}"), nothing, 1,
     "--params is not valid JSON"),
    ("sklearn reads Excel features", lambda p: SKLEARN(p, "--params", '{"max_iter": 50}'),
     both(excel(train_csv), excel(features_test)), 0, "wrote"),
    # ---- first-level audio and audio-features
    ("audio latin-1 metadata", AUDIO, latin1(meta_csv), 1, NOT_UTF8),
    ("audio gzip metadata", AUDIO, gzipped(meta_csv), 1, "gzip archive"),
    ("audio semicolon metadata", AUDIO, delimited(meta_csv), 1, "delimiter ';'"),
    ("audio-features latin-1 metadata", FEATURES, latin1(meta_csv), 1, NOT_UTF8),
    ("audio-features out is the metadata, with force",
     lambda p: FEATURES(p, "--out", p.meta, "--force"), nothing, 1, "an input of this command"),
    ("audio-features out is in an experiment, with force",
     lambda p: FEATURES(p, "--out", p.root / "sim_000" / "fold_1" / "f.csv", "--force"), nothing,
     1, "inside experiment 'sim_000'"),
    ("audio-features utf-16 metadata", FEATURES, utf16(meta_csv), 1, "UTF-16"),
    ("audio-features reads an Excel metadata file", FEATURES, excel(meta_csv), 0, "wrote"),
    # ---- one writer per root: a second command refuses, naming the running one
    ("collect while auto writes the root", COLLECT, locked_by(), 1, LOCKED),
    ("search-subsets while auto writes the root", SEARCH, locked_by(), 1, LOCKED),
    ("tune while auto writes the root", TUNE, locked_by(), 1, LOCKED),
    ("train while auto writes the root", TRAIN, locked_by(), 1, LOCKED),
    ("blend while auto writes the root", BLEND, locked_by(), 1, LOCKED),
    ("import while auto writes the root", IMPORT, locked_by(), 1, LOCKED),
    ("sklearn while auto writes the root", SKLEARN, locked_by(), 1, LOCKED),
    ("audio while auto writes the root", AUDIO, locked_by(), 1, LOCKED),
    ("make-folds into a root auto writes", lambda p: MAKE_FOLDS(p, "--force", root=p.root),
     locked_by(), 1, LOCKED),
    ("auto while another auto writes the root", AUTO, locked_by(), 1, LOCKED),
    ("train while tune workers tune the root", TRAIN, locked_by("stack tune", shared=True), 1,
     "is being written by `stack tune` (pid"),
    ("tune beside another tune worker", TUNE, locked_by("stack tune", shared=True), 0,
     "best params saved"),
    ("import with an unusable STACK_LOCK_WAIT", IMPORT,
     lambda p: p.monkeypatch.setenv("STACK_LOCK_WAIT", "soon"), 1,
     "STACK_LOCK_WAIT must be a number of seconds"),
    ("import into a root written by nobody", IMPORT, nothing, 0, "imported 'mine'"),
]


def full_disk(p: P):
    """Every atomic write fails as on a full disk (ENOSPC from the write itself)."""
    real = os.fdopen

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def close(self):
            self.handle.close()

        def fileno(self):
            return self.handle.fileno()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    p.monkeypatch.setattr(layout.atomic.os, "fdopen", lambda fd, mode="r", *a, **k:
                          Full(real(fd, mode, *a, **k)))


def snapshot(tmp: Path) -> dict[str, str]:
    """{path: sha1} of every file under ``tmp`` outside ``.stack/`` folders (the user's files)."""
    out = {}
    for folder, dirs, names in os.walk(tmp):
        dirs[:] = [d for d in dirs if d != layout.STACK_DIR]
        for name in names:
            path = Path(folder) / name
            try:
                out[str(path.relative_to(tmp))] = hashlib.sha1(path.read_bytes()).hexdigest()
            except OSError:
                out[str(path.relative_to(tmp))] = "unreadable"
    return out


@pytest.mark.parametrize("command, damage, code, fragment", [row[1:] for row in ROWS],
                         ids=[row[0] for row in ROWS])
def test_red_team(project, command, damage, code, fragment):
    damage(project)
    before = snapshot(project.tmp)
    try:
        result = CliRunner().invoke(app, [str(a) for a in command(project)])
    finally:
        for cleanup in project.cleanups:
            cleanup()
    project.monkeypatch.undo()
    output = result.output
    assert "Traceback" not in output, output
    assert result.exit_code == code, output
    assert fragment in " ".join(output.split()), output
    if code != 0:
        error_lines = [line for line in output.splitlines()
                       if line.startswith("error:") or line.startswith("interrupted")]
        assert len(error_lines) == 1, output
    after = snapshot(project.tmp)
    changed = [path for path, digest in before.items() if after.get(path) != digest]
    assert not changed, f"changed or lost: {changed}"
    if code != 0:
        added = sorted(set(after) - set(before))
        assert not added, f"a refused command left new files: {added}"


# ---------------------------------------------------------------- what the table cannot say


def _excel(text: str, *, bom: bool = False, trailing_comma: bool = False, crlf: bool = False) -> bytes:
    lines = text.splitlines()
    if trailing_comma:
        lines = [line + "," for line in lines]
    out = ("\r\n" if crlf else "\n").join(lines) + ("\r\n" if crlf else "\n")
    return (b"\xef\xbb\xbf" if bom else b"") + out.encode("utf-8")


def test_excel_exports_read_like_the_clean_files(small_layout):
    """A byte-order mark, CRLF and a trailing comma on every line (Excel's CSV) change nothing."""
    from stacker.layout.collect import collect

    root = small_layout()
    clean = collect(root, use_cache=False, n_jobs=1)
    (root / "classes.txt").write_bytes(_excel("\n".join(clean.classes), bom=True, crlf=True))
    folds_text = (root / "folds.csv").read_text()
    (root / "folds.csv").write_bytes(_excel(folds_text, bom=True, crlf=True))
    for name in clean.names:
        for k in clean.fold_numbers:
            for split in layout.SPLITS:
                path = layout.probs_path(root, name, k, split)
                path.write_bytes(_excel(path.read_text(), bom=(k == 1), trailing_comma=True))
    excel = collect(root, use_cache=False, n_jobs=1, strict=True)
    assert excel.names == clean.names and excel.classes == clean.classes
    np.testing.assert_array_equal(excel.oof, clean.oof)
    np.testing.assert_array_equal(excel.test, clean.test)


def test_make_folds_keeps_the_users_classes_txt(project):
    """classes.txt holds the user's submission order and a class no row has yet: kept as it is."""
    root = project.tmp / "fresh"
    root.mkdir()
    mine = "class_d\nclass_c\nclass_b\nclass_a\nclass_e\n".encode()
    (root / "classes.txt").write_bytes(mine)
    result = CliRunner().invoke(app, [str(a) for a in MAKE_FOLDS(project)])
    assert result.exit_code == 0, result.output
    assert (root / "classes.txt").read_bytes() == mine
    assert layout.read_folds(root).classes == ("class_d", "class_c", "class_b", "class_a", "class_e")


def test_ctrl_c_while_the_cli_is_importing(monkeypatch, capsys):
    """The console script (stacker.cli.entry:main): one line and exit 130, no traceback."""
    import importlib.abc
    import sys

    from stacker.cli import entry

    class Interrupting(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "stacker.cli.app":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "stacker.cli.app")
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    with pytest.raises(SystemExit) as stop:
        entry.main()
    assert stop.value.code == 130
    assert capsys.readouterr().err == "interrupted; rerun to resume\n"


def test_our_own_bug_keeps_its_traceback_behind_debug(project, monkeypatch):
    monkeypatch.setenv("STACK_DEBUG", "0")           # restored after the test (--debug sets it)
    bug(("stacker.level2.fit", "train_level2"))(project)
    args = [str(a) for a in TRAIN(project)]
    hidden = CliRunner().invoke(app, args)
    assert hidden.exit_code == 2 and "--debug" in hidden.output
    for how in (["--debug", *args], args):
        if how is args:
            monkeypatch.setenv("STACK_DEBUG", "1")
        shown = CliRunner().invoke(app, how)
        assert isinstance(shown.exception, ZeroDivisionError), shown.output


def test_full_disk_names_the_file_and_leaves_no_half_written_cache(project):
    full_disk(project)
    result = CliRunner().invoke(app, ["collect", "--root", str(project.root)])
    project.monkeypatch.undo()
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output and "leaderboard.csv" in result.output
    stack = project.root / layout.STACK_DIR
    assert not list(stack.rglob("*.npy")) and not list(stack.rglob("*.tmp"))
    assert not list(project.tmp.rglob(".*.tmp"))


def test_a_failed_rename_names_the_users_file_not_the_temporary_one(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", src)

    monkeypatch.setattr(layout.atomic.os, "replace", refuse)
    with pytest.raises(PermissionError) as error:
        layout.atomic_write_text(tmp_path / "submission.csv", "x\n")
    assert error.value.filename == str(tmp_path / "submission.csv")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_refuses_the_temporary_file_names_the_users_file(tmp_path, monkeypatch):
    """mkstemp fails in a read-only folder (root ignores modes, so the failure is simulated):
    the error names submission.csv, not '.submission.csv.XXXX.tmp'."""
    def refuse(*args, dir=None, prefix="", suffix="", **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/{prefix}abc{suffix}")

    monkeypatch.setattr(layout.atomic.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError) as error:
        layout.atomic_write_text(tmp_path / "submission.csv", "x\n")
    assert error.value.filename == str(tmp_path / "submission.csv")


def test_an_error_raised_while_handling_ctrl_c_still_reads_interrupted(project):
    """A library cleaning up after Ctrl-C (a rolled-back database session) may raise its own
    error with the KeyboardInterrupt as its context: that is still an interruption."""
    def interrupted_then_failed(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("session rolled back")  # noqa: B904 (the implicit context is the point)

    project.monkeypatch.setattr(__import__("stacker.level2.tune", fromlist=["x"]), "tune",
                                interrupted_then_failed)
    result = CliRunner().invoke(app, [str(a) for a in TUNE(project)])
    assert result.exit_code == 130 and "interrupted; rerun to resume" in result.output
    assert "Traceback" not in result.output


SECRET = "Hunter2xyzzy"


@pytest.mark.parametrize("storage", [
    "sqlite:///{tmp}/t.db?password={pw}",                 # the query string: opens, tunes, saves
    "sqlite:///{tmp}/t.db?mode=rw&pwd={pw}",
    "host=localhost port=1 password={pw} dbname=x",       # libpq's keyword form: refused
    "postgresql+psycopg://u:{pw}@localhost:1/db",          # the user part: unreachable
], ids=["query", "query-pwd", "libpq", "user-part"])
# sqlalchemy warns that pysqlite ignores the query string: that URL is this test's input
@pytest.mark.filterwarnings("ignore:Query string argument")
def test_a_storage_password_reaches_no_output_and_no_file(project, storage):
    """Tune with a password in the storage URL: nothing printed, raised or saved holds it."""
    url = storage.format(tmp=project.tmp, pw=SECRET)
    result = CliRunner().invoke(app, [str(a) for a in TUNE(project, "--storage", url)])
    assert "Traceback" not in result.output, result.output
    assert SECRET not in result.output and SECRET not in repr(result.exception)
    if url.startswith("sqlite"):
        assert result.exit_code == 0, result.output
        assert (project.root / layout.STACK_DIR / "best_params.json").exists()
    else:
        assert result.exit_code == 1 and "***" in result.output, result.output
    holding = [str(path) for path in project.tmp.rglob("*")
               if path.is_file() and SECRET.encode() in path.read_bytes()]
    assert not holding, f"the password was saved in {holding}"
