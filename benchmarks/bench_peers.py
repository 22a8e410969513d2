"""`stack auto` against its peers on held-out labels: the benchmark of issue 21.

For each development set (the MULAN sets of ``../shared/data/mulan``: emotions, birds, medical,
bibtex, tmc2007) ``benchmarks/mulan_layout.py`` builds one first-level layout (scikit-learn
experiments, 5 folds of the train split, the test split's real labels kept aside; cached under
``--workdir``); for ``audio``, the demo's synthetic clips, ``benchmarks/audio_layout.py`` runs
the demo's first level (four scikit-learn models on log-mel statistics and the audio CNN). Every method below is fitted on the same first-level OOF predictions and scored
(lwlrap) on the held-out test labels:

    best single       the best experiment by CV                    } `stack auto`'s own first-level
    geo-mean of all   the geometric mean of every experiment       } recipes (result.recipes:
    best subset       the best subset's geo-mean                   } "best single", "all first-
    GES               greedy ensemble selection                    } level", "first-level subset",
    linear stacker    the first-level logistic stacker             } "...GES", "...linear")
    argus-style       argus-freesound's recipe (DCASE 2019 Task 2): its stacking MLP trained on
                      the best subset's OOF predictions, early-stopped on the fold it predicts;
                      test = geo-mean of the subset's members and the MLP (fold models geo-meaned)
    AutoGluon ES      AutoGluon's own EnsembleSelection (autogluon.core, the ``[peers]`` extra) on
                      the OOF predictions of every experiment, with its defaults (25 rounds); test
                      = its weights on the fold-averaged test predictions
    stack auto        ``run_auto`` with default settings (on a fresh copy of the layout); its
                      submission.csv's score

It prints one table: each score per set and on the mean, `stack auto`'s gain over the best peer
(the peer with the best held-out score on that set, or on the mean) with a paired bootstrap
standard error (the test rows resampled, the same resample for every method), `stack auto`'s
nested CV and choice, the seconds per set and the machine load; ``--json PATH`` writes every number.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_peers.py [--sets emotions,birds] [--workdir DIR]
        [--data DIR] [--budget S] [--seed 0] [--trials N] [--boot 1000] [--json PATH] [--reuse-auto]

Needs ``pip install -e '.[peers]'`` for AutoGluon (its column is nan without it). Never imported by
the tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT_DIR = Path(__file__).resolve().parents[1]
if str(ROOT_DIR) not in sys.path:
    sys.path.insert(0, str(ROOT_DIR))

from benchmarks.audio_layout import AUDIO, build_audio_layout  # noqa: E402
from benchmarks.mulan_layout import ALL_DATASETS, MULAN_DIR, build_mulan_layout, read_test_labels  # noqa: E402

SETS = (*ALL_DATASETS, AUDIO)          # the five MULAN sets and the demo's audio set

# ================================================================= the calls into stacker
# Every use of the stacker library is in these few functions, so that when its API moves only they
# change. Public entry points only: stacker.auto, stacker.layout.collect, stacker.blend, metrics.

RECIPES = {"best single": "best single", "geo-mean of all": "all first-level",
           "best subset": "first-level subset", "GES": "first-level GES",
           "linear stacker": "first-level linear"}     # the table's name -> the recipe's name


def stacker_auto(root: Path, out: Path, *, budget: float | None, seed: int,
                 trials: int | None) -> dict:
    """Run `stack auto` on ``root`` (its submission to ``out``); the parts this benchmark reads:
    {'recipes': {name: Recipe}, 'final': name, 'nested_cv', 'settings' (dict), 'tuning'}."""
    from stacker.auto import AutoSettings, run_auto

    settings = AutoSettings(seed=seed, n_trials=trials) if budget is None else \
        AutoSettings(seed=seed, n_trials=trials, time_budget=budget)
    result = run_auto(root, settings=settings, out=out, report=None)
    return {"recipes": {r.name: r for r in result.recipes}, "final": result.final.name,
            "nested_cv": float(result.final.nested_cv), "settings": asdict(settings),
            "tuning": {k: v for k, v in result.tuning.items() if isinstance(v, (int, float, str))}}


def stacker_level1(root: Path) -> dict:
    """The first-level experiments of the layout at ``root``: {'names', 'ids' (n,), 'y' (n, C)
    uint8, 'fold' (n,), 'fold_numbers', 'classes', 'oof' (n, M, C), 'test_ids' (n_test,),
    'test' (n_folds, n_test, M, C)}; rows in folds.csv order."""
    from stacker.layout.collect import collect

    collection = collect(root)
    names = [n for n in collection.names if collection.level(n) == 1]
    collection = collection.select(names)
    return {"names": list(names), "ids": np.asarray(collection.ids), "y": np.asarray(collection.y),
            "fold": np.asarray(collection.fold), "fold_numbers": list(collection.fold_numbers),
            "classes": list(collection.classes), "oof": np.asarray(collection.oof, np.float64),
            "test_ids": np.asarray(collection.test_ids), "test": np.asarray(collection.test)}


def stacker_recipe_tests(root: Path, recipes: dict) -> tuple[np.ndarray, dict]:
    """(test ids (n_test,), {label: the recipe's test predictions (n_test, C)}) on the layout at
    ``root``, for ``recipes`` {label: Recipe}."""
    from stacker.layout.collect import collect

    collection = collect(root)
    probs = {label: np.asarray(r.combination.test(collection)) for label, r in recipes.items()}
    return np.asarray(collection.test_ids), probs


def stacker_lwlrap(y: np.ndarray, scores: np.ndarray) -> float:
    """The project's lwlrap (the reference the fast one below is checked against)."""
    from stacker.metrics import lwlrap

    return float(lwlrap(y, scores))


# ================================================================= lwlrap, fast and per row

def lwlrap_rows(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (the sum of the precisions at its positives, its number of positives), (n,) each;
    lwlrap = sums.sum() / counts.sum(). A positive's precision: the positives of its row scored at
    least as high, over all classes scored at least as high (ties count as above, as in DCASE's
    reference). One (n_positives, n_classes) comparison, no sort."""
    truth = np.asarray(y) > 0
    scores = np.asarray(scores)
    rows, cols = np.nonzero(truth)
    above = scores[rows] >= scores[rows, cols][:, None]            # (n_positives, n_classes)
    precision = (above & truth[rows]).sum(axis=1) / above.sum(axis=1)
    n = len(truth)
    return (np.bincount(rows, weights=precision, minlength=n),
            truth.sum(axis=1).astype(np.float64))


def fast_lwlrap(y: np.ndarray, scores: np.ndarray) -> float:
    sums, counts = lwlrap_rows(y, scores)
    return float(sums.sum() / counts.sum()) if counts.sum() else float("nan")


def geo_mean(probs: np.ndarray, axis: int, eps: float = 1e-7) -> np.ndarray:
    return np.exp(np.log(np.clip(probs, eps, 1.0)).mean(axis=axis))


# ================================================================= the argus-style recipe

def argus_net(n_in: int, n_out: int, *, base: int, reduction: int, dropout: float):
    """argus-freesound's stacking net (its src/stacking/models.py): a sigmoid gate that reweights
    the inputs (n_in -> n_in // reduction -> n_in), then n_in -> 2 base -> base -> n_out with PReLU
    and dropout; returns logits."""
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = nn.Sequential(nn.Linear(n_in, max(n_in // reduction, 1)), nn.ReLU(),
                                      nn.Linear(max(n_in // reduction, 1), n_in), nn.Sigmoid())
            self.body = nn.Sequential(nn.Linear(n_in, 2 * base), nn.PReLU(), nn.Dropout(dropout),
                                      nn.Linear(2 * base, base), nn.PReLU(), nn.Dropout(dropout),
                                      nn.Linear(base, n_out))

        def forward(self, x):
            return self.body(self.gate(x) * x)

    return Net()


# argus trained with Adam lr 3.9e-5, batches of 128, epochs of 256 random batches, lr x0.8 after
# 9 epochs without gain, stop after 20, keeping the best epoch on the validation fold; the same
# loop here with a faster schedule (lr 1e-3, 32 batches an epoch) so that it runs on 2 CPU cores.
ARGUS = {"base": 256, "reduction": 2, "dropout": 0.48, "lr": 1e-3, "batch": 128,
         "batches_per_epoch": 32, "lr_patience": 5, "lr_factor": 0.8, "patience": 20,
         "max_epochs": 300}


def argus_fold(x_train, y_train, x_val, y_val, x_test, *, seed: int, params: dict = ARGUS):
    """Train one fold model, early-stopped on (x_val, y_val); its best epoch's test probabilities."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = argus_net(x_train.shape[1], y_train.shape[1], base=params["base"],
                    reduction=params["reduction"], dropout=params["dropout"])
    optimizer = torch.optim.Adam(net.parameters(), lr=params["lr"])
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=params["lr_factor"], patience=params["lr_patience"],
        min_lr=1e-8)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    xt, yt = torch.as_tensor(x_train, dtype=torch.float32), torch.as_tensor(y_train, dtype=torch.float32)
    xv = torch.as_tensor(x_val, dtype=torch.float32)
    best, best_state, waited = -np.inf, None, 0
    for _epoch in range(params["max_epochs"]):
        net.train()
        for _ in range(params["batches_per_epoch"]):
            rows = torch.as_tensor(rng.integers(0, len(xt), params["batch"]))
            optimizer.zero_grad()
            loss_fn(net(xt[rows]), yt[rows]).backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            score = fast_lwlrap(y_val, net(xv).numpy())
        plateau.step(score)
        if score > best:
            best, waited = score, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            waited += 1
            if waited >= params["patience"]:
                break
    net.load_state_dict(best_state)
    net.eval()
    with torch.no_grad():
        return torch.sigmoid(net(torch.as_tensor(x_test, dtype=torch.float32))).numpy(), best


def argus_style(level1: dict, members: list[str], *, seed: int, cache: Path) -> np.ndarray:
    """argus's recipe on the best subset ``members``: test predictions (n_test, C), cached."""
    key = hashlib.sha1(json.dumps([members, seed, ARGUS, level1["names"]]).encode()
                       + level1["oof"].tobytes() + level1["test"].tobytes()).hexdigest()[:12]
    path = cache / f"argus_{key}.npy"
    if path.exists():
        return np.load(path)
    import torch

    torch.set_num_threads(1)             # a shared machine; the net is small
    idx = [level1["names"].index(m) for m in members]
    x = level1["oof"][:, idx].reshape(len(level1["oof"]), -1)
    # the members' test inputs: each member's fold models geo-meaned, as argus predicted the test set
    per_member = geo_mean(level1["test"][:, :, idx].astype(np.float64), axis=0)   # (n_test, k, C)
    x_test = per_member.reshape(len(per_member), -1)
    fold_preds = []
    for i, k in enumerate(level1["fold_numbers"]):
        val = level1["fold"] == k
        pred, _ = argus_fold(x[~val], level1["y"][~val], x[val], level1["y"][val], x_test,
                             seed=seed * 1000 + i)
        fold_preds.append(pred)
    mlp = geo_mean(np.stack(fold_preds), axis=0)                                   # (n_test, C)
    final = geo_mean(np.concatenate([per_member, mlp[:, None, :]], axis=1), axis=1)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, final)
    return final


# ================================================================= AutoGluon's EnsembleSelection

def autogluon_es(level1: dict, *, seed: int) -> tuple[np.ndarray, dict]:
    """AutoGluon's EnsembleSelection on every experiment's OOF predictions, as its
    WeightedEnsemble model calls it (ensemble_size 25, RandomState(seed), random tie-break), with
    a vectorised lwlrap as the scorer. Multi-label is no AutoGluon problem type: 'softclass' (a
    label matrix) renormalises each candidate's rows, which leaves every row's ranking, so lwlrap,
    unchanged. Returns (test predictions (n_test, C): the weights on each experiment's
    fold-averaged test predictions, {name: weight})."""
    from autogluon.core.metrics import make_scorer
    from autogluon.core.models.greedy_ensemble.ensemble_selection import EnsembleSelection

    scorer = make_scorer("lwlrap", fast_lwlrap, optimum=1, greater_is_better=True,
                         needs_proba=True)
    selection = EnsembleSelection(ensemble_size=25, problem_type="softclass", metric=scorer,
                                  random_state=np.random.RandomState(seed))
    oof = level1["oof"]
    selection.fit([oof[:, m] for m in range(oof.shape[1])], level1["y"].astype(np.float64))
    weights = np.asarray(selection.weights_, dtype=np.float64)
    test = level1["test"].astype(np.float64).mean(axis=0)                          # (n_test, M, C)
    probs = np.einsum("tmc,m->tc", test, weights)
    return probs, {n: float(w) for n, w in zip(level1["names"], weights) if w}


# ================================================================= one set

def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def fresh_copy(layout_root: Path, names: list[str], target: Path) -> Path:
    """folds.csv, classes.txt and the first-level experiments of ``layout_root`` copied to an empty
    ``target`` (no caches, no test labels), where `stack auto` may write its own experiments."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("folds.csv", "classes.txt"):
        if (layout_root / name).exists():
            shutil.copy2(layout_root / name, target / name)
    for name in names:
        shutil.copytree(layout_root / name, target / name)
    return target


def read_submission(path: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(ids (n_test,), probabilities (n_test, C) in ``classes`` order) of a submission CSV."""
    import pandas as pd

    frame = pd.read_csv(path, dtype={0: str})
    return frame.iloc[:, 0].astype(str).to_numpy(), frame[classes].to_numpy(dtype=np.float64)


def aligned(ids: np.ndarray, probs: np.ndarray, test_ids: np.ndarray) -> np.ndarray:
    position = {str(i): p for p, i in enumerate(ids)}
    return probs[[position[str(i)] for i in test_ids]]


def run_set(name: str, args) -> dict:
    """Every method on one set: {'scores', 'rows' (per-row lwlrap parts), 'auto', 'seconds', ...}."""
    workdir = args.workdir / name
    seconds, began = {}, time.perf_counter()
    if name == AUDIO:
        layout_root = build_audio_layout(workdir / "demo")
    else:
        layout_root = workdir / "layout"
        build_mulan_layout(args.data / name, layout_root, seed=0)
    seconds["layout"] = time.perf_counter() - began
    test_ids, y_test = read_test_labels(layout_root)
    level1 = stacker_level1(layout_root)

    began = time.perf_counter()
    auto_root = workdir / "auto"
    if not (args.reuse_auto and (auto_root / "folds.csv").exists()):
        fresh_copy(layout_root, level1["names"], auto_root)
    submission = workdir / "auto_submission.csv"
    auto = stacker_auto(auto_root, submission, budget=args.budget, seed=args.seed,
                        trials=args.trials)
    seconds["stack auto"] = time.perf_counter() - began

    began = time.perf_counter()
    ids, probs = stacker_recipe_tests(auto_root, {label: auto["recipes"][recipe]
                                                  for label, recipe in RECIPES.items()})
    preds = {label: aligned(ids, p, test_ids) for label, p in probs.items()}
    subset = list(auto["recipes"][RECIPES["best subset"]].members)
    preds["argus-style"] = aligned(level1["test_ids"], argus_style(
        level1, subset, seed=args.seed, cache=workdir / "peers"), test_ids)
    ag_weights = None
    try:
        probs, ag_weights = autogluon_es(level1, seed=args.seed)
        preds["AutoGluon ES"] = aligned(level1["test_ids"], probs, test_ids)
    except ImportError as error:
        print(f"  {name}: AutoGluon ES skipped ({error}; pip install -e '.[peers]')", flush=True)
    seconds["peers"] = time.perf_counter() - began
    preds["stack auto"] = aligned(*read_submission(submission, level1["classes"]), test_ids)

    rows = {m: lwlrap_rows(y_test, p) for m, p in preds.items()}
    scores = {m: float(s.sum() / c.sum()) for m, (s, c) in rows.items()}
    check = stacker_lwlrap(y_test, preds["stack auto"])
    if abs(check - scores["stack auto"]) > 1e-9:
        raise AssertionError(f"fast lwlrap {scores['stack auto']} != stacker's {check}")
    seconds["total"] = sum(seconds.values())
    return {"set": name, "scores": scores, "rows": rows, "nested_cv": auto["nested_cv"],
            "split_shift": split_shift(level1, test_ids, y_test),
            "chosen": auto["final"], "subset": subset, "autogluon_weights": ag_weights,
            "settings": auto["settings"], "tuning": auto["tuning"], "seconds": seconds,
            "load": load(), "n_rows": int(len(level1["ids"])), "n_test": int(len(test_ids)),
            "n_classes": int(y_test.shape[1]), "experiments": level1["names"]}


def split_shift(level1: dict, test_ids: np.ndarray, y_test: np.ndarray) -> float:
    """The split's own shift, which no choice made: the mean over the first-level models of
    (held-out lwlrap of its fold-mean test predictions - its CV lwlrap)."""
    shifts = []
    for m in range(len(level1["names"])):
        test = aligned(level1["test_ids"], geo_mean(level1["test"][:, :, m].astype(np.float64),
                                                    axis=0), test_ids)
        shifts.append(stacker_lwlrap(y_test, test) - stacker_lwlrap(level1["y"], level1["oof"][:, m]))
    return float(np.mean(shifts))


# ================================================================= gains and the table

def bootstrap_counts(n: int, boot: int, rng: np.random.Generator) -> np.ndarray:
    """(boot, n) how often each test row is drawn in each resample."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=boot).astype(np.float64)


def boot_scores(result: dict, counts: np.ndarray) -> dict:
    """{method: (boot,) lwlrap on each resample} from the per-row parts: the same rows for all."""
    return {m: (counts @ s) / np.maximum(counts @ c, 1e-12) for m, (s, c) in result["rows"].items()}


def gains(results: list[dict], boot: int, seed: int) -> dict:
    """stack auto - the best peer, per set and on the mean, with paired bootstrap SEs; also
    against each peer. {'<set>'|'mean': {'best peer', 'gain', 'se', 'vs': {peer: [gain, se]}}}."""
    rng = np.random.default_rng(seed)
    per_set = [boot_scores(r, bootstrap_counts(r["n_test"], boot, rng)) for r in results]
    out = {}
    columns = [(r["set"], r["scores"], b) for r, b in zip(results, per_set)]
    if len(results) > 1:
        methods = [m for m in results[0]["scores"] if all(m in r["scores"] for r in results)]
        mean_scores = {m: float(np.mean([r["scores"][m] for r in results])) for m in methods}
        mean_boot = {m: np.mean([b[m] for b in per_set], axis=0) for m in methods}
        columns.append(("mean", mean_scores, mean_boot))
    for label, scores, sampled in columns:
        peers = [m for m in scores if m != "stack auto"]
        vs = {p: [scores["stack auto"] - scores[p],
                  float(np.std(sampled["stack auto"] - sampled[p], ddof=1))] for p in peers}
        best = max(peers, key=lambda p: scores[p])
        out[label] = {"best peer": best, "gain": vs[best][0], "se": vs[best][1], "vs": vs,
                      "scores": scores,
                      "auto se": float(np.std(sampled["stack auto"], ddof=1))}
    return out


def print_table(results: list[dict], gain: dict) -> None:
    labels = [r["set"] for r in results] + (["mean"] if "mean" in gain else [])
    methods = list(gain[labels[-1]]["scores"])
    width, col = 22, 16
    head = f"{'held-out test lwlrap':<{width}}" + "".join(f"{s:>{col}}" for s in labels)
    print(head)
    print("-" * len(head))
    for m in methods:
        print(f"{m:<{width}}" + "".join(f"{gain[s]['scores'].get(m, np.nan):>{col}.4f}"
                                         for s in labels))
    print("-" * len(head))
    print(f"{'best peer':<{width}}" + "".join(f"{gain[s]['best peer'][:col - 1]:>{col}}"
                                              for s in labels))
    print(f"{'auto - best peer':<{width}}" + "".join(f"{gain[s]['gain']:>+{col}.4f}" for s in labels))
    print(f"{'  bootstrap SE':<{width}}" + "".join(f"{gain[s]['se']:>{col}.4f}" for s in labels))
    if all("AutoGluon ES" in gain[s]["vs"] for s in labels):
        print(f"{'auto - AutoGluon ES':<{width}}" + "".join(
            f"{gain[s]['vs']['AutoGluon ES'][0]:>+{col}.4f}" for s in labels))
    nested = [r["nested_cv"] for r in results]
    print(f"{'auto nested CV':<{width}}" + "".join(f"{v:>{col}.4f}" for v in nested)
          + (f"{np.mean(nested):>{col}.4f}" if "mean" in gain else ""))
    gaps = [gain[r["set"]]["scores"]["stack auto"] - r["nested_cv"] for r in results]
    print(f"{'held-out - nested':<{width}}" + "".join(f"{v:>+{col}.4f}" for v in gaps))
    print(f"{'  2 SE of held-out':<{width}}" + "".join(f"{2 * gain[r['set']]['auto se']:>{col}.4f}"
                                                      for r in results))
    # the split's own shift (every first-level model's held-out minus CV, their mean: no choice
    # made); what remains of the gap is the estimate's own bias
    if all(r.get("split_shift") is not None for r in results):
        shift = [r["split_shift"] for r in results]
        print(f"{'split shift (models)':<{width}}" + "".join(f"{v:>+{col}.4f}" for v in shift))
        print(f"{'  gap net of shift':<{width}}" + "".join(f"{g - v:>+{col}.4f}"
                                                           for g, v in zip(gaps, shift)))
    print(f"{'auto chose':<{width}}" + "".join(f"{r['chosen'][:col - 1]:>{col}}" for r in results))
    for part in ("layout", "stack auto", "peers", "total"):
        print(f"{'seconds: ' + part:<{width}}" + "".join(f"{r['seconds'][part]:>{col}.0f}"
                                                         for r in results))
    for r in results:
        weights = {n: round(w, 3) for n, w in (r["autogluon_weights"] or {}).items()}
        print(f"  {r['set']}: {r['n_rows']} rows / {r['n_test']} test x {r['n_classes']} classes, "
              f"{len(r['experiments'])} experiments; subset {'+'.join(r['subset'])}; AutoGluon "
              f"weights {weights}; load after {r['load']}")


def versions() -> dict:
    from importlib import metadata

    found = {}
    for package in ("autogluon.core", "torch", "numpy", "pandas", "scikit-learn", "optuna"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--speed" in argv:              # the speed benchmark: benchmarks/peers_speed.py
        from benchmarks.peers_speed import run

        return run([a for a in argv if a != "--speed"])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS),
                        help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--data", type=Path, default=MULAN_DIR,
                        help="the MULAN folder (one sub-folder per set; default ../shared/data/mulan)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stack_bench_peers"),
                        help="layouts, stack auto's runs and the peers' caches, one folder per set")
    parser.add_argument("--budget", type=float, default=None,
                        help="stack auto's time budget in seconds (default: AutoSettings')")
    parser.add_argument("--seed", type=int, default=0,
                        help="stack auto's, the argus MLP's and AutoGluon's seed (the layouts "
                             "keep seed 0)")
    parser.add_argument("--trials", type=int, default=None,
                        help="AutoSettings.n_trials: tune exactly N trials (a fast reproducible run)")
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap resamples of the test rows")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    parser.add_argument("--reuse-auto", action="store_true",
                        help="let stack auto resume its earlier run of each set (default: a fresh "
                             "copy of the layout, so that a changed stack auto is measured afresh)")
    args = parser.parse_args(argv)
    if not args.data.exists():
        raise SystemExit(f"{args.data} is absent (see ../shared/data/README.md; or give --data)")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started, load_before = time.perf_counter(), load()
    results = []
    for name in args.sets.split(","):
        print(f"{name}: ...", flush=True)
        results.append(run_set(name, args))
        r = results[-1]
        print(f"{name}: " + ", ".join(f"{m} {v:.4f}" for m, v in r["scores"].items())
              + f"; {r['seconds']['total']:.0f} s, load {r['load']}", flush=True)
    gain = gains(results, args.boot, args.seed)
    print()
    print_table(results, gain)
    print(f"\nversions {versions()}; budget {results[0]['settings']['time_budget']:.0f} s, trials "
          f"{args.trials}, seed {args.seed}, {args.boot} bootstrap resamples; "
          f"{time.perf_counter() - started:.0f} s in all; load before {load_before}, "
          f"after {load()}")
    if args.json is not None:
        record = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                  "versions": versions(), "gains": gain,
                  "sets": [{k: v for k, v in r.items() if k != "rows"} for r in results]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1, default=float))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
