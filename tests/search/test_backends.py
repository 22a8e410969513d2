"""The compiled kernel and the torch path against the numpy scorer: bit-identical scores and
identical searches, whatever the device."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from stacker.errors import OptionError
from stacker.search import backends, kernel
from stacker.search.engine import search_arrays
from stacker.search.methods import core as sm
from stacker.search.methods import exhaustive
from stacker.search.scoring import make_scorer, quantize
from stacker.simulate import simulated_probs

needs_numba = pytest.mark.skipif(not kernel.available(), reason="numba is not installed")


def pool(seed=0, n_rows=300, n_models=7, n_classes=9, n_folds=4, votes=False):
    """Multi-label rows (some with 3 positives, some with none), optionally kNN-like votes in steps
    of 1/8 so that sums tie exactly inside rows."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n_rows, n_classes), dtype=np.uint8)
    y[np.arange(n_rows), rng.integers(n_classes, size=n_rows)] = 1
    for share in (0.3, 0.1):
        extra = np.flatnonzero(rng.random(n_rows) < share)
        y[extra, rng.integers(n_classes, size=len(extra))] = 1
    y[rng.random(n_rows) < 0.05] = 0
    if votes:
        oof = np.stack([np.clip(np.round((0.4 * y + rng.random(y.shape) * 0.7) * 8) / 8, 0, 1)
                        for _ in range(n_models)], axis=1)
    else:
        oof = np.stack([simulated_probs(y, skill=s, rng=rng) for s in rng.uniform(0.2, 1.2, n_models)],
                       axis=1)
        oof[rng.random(oof.shape) < 0.03] = 0.0
    fold = rng.permutation(np.arange(n_rows) % n_folds)
    return oof, y, fold, [f"m{i}" for i in range(n_models)]


def prepared(metric="lwlrap", blend="geo-mean", **kwargs):
    oof, y, fold, _ = pool(**kwargs)
    scorer = make_scorer(y, fold, sorted(np.unique(fold)), metric, blend=blend, power=2.0)
    q, scale = quantize(oof, blend, max_terms=20, power=2.0, eps=1e-7, rows=scorer.rows)
    scorer.scale = scale
    return q, scorer


def numpy_exhaustive(q, scorer, max_size):
    ctx = sm.Context(q=q, scorer=scorer)
    return exhaustive.run_exhaustive_chunk(ctx, [((m,), True) for m in range(q.shape[0])], max_size)


def walkers(q, scorer):
    from stacker.search.torch_scoring import TorchWalker

    found = [TorchWalker(q, scorer, device="cpu", batch_bytes=1 << 20)]
    if kernel.available():
        found += [kernel.KernelWalker(q, scorer, n_jobs=1), kernel.KernelWalker(q, scorer, n_jobs=2)]
    return found


@pytest.mark.parametrize("metric, blend, votes", [
    ("lwlrap", "geo-mean", False), ("lrap", "mean", False), ("lwlrap", "mean", True),
    ("lrap", "rank", True),
])
def test_walkers_score_every_subset_bit_identically_to_numpy(metric, blend, votes):
    q, scorer = prepared(metric, blend, votes=votes)
    masks, expected = numpy_exhaustive(q, scorer, max_size=4)
    order = np.argsort(masks)
    for walker in walkers(q, scorer):
        got_masks, sums = walker.exhaustive([((), True)], 4)
        got = scorer.outputs_from_fold_sums(sums)
        assert sorted(got_masks.tolist()) == sorted(masks.tolist())
        np.testing.assert_array_equal(got[np.argsort(got_masks)], expected[order])


def test_walkers_score_extensions_of_a_weighted_bag_bit_identically():
    q, scorer = prepared("lwlrap", "geo-mean", votes=True)
    base = (2, 0, 1, 0, 3, 0, 1)
    S = sm.ensemble_sum(q, base)
    candidates = list(range(q.shape[0]))
    expected = np.array([scorer.evaluate(S + q[j], sum(base) + 1) for j in candidates])
    for walker in walkers(q, scorer):
        np.testing.assert_array_equal(scorer.outputs_from_fold_sums(walker.extensions(S, candidates)),
                                      expected)
        assert walker.extensions(S, []).shape == (0, scorer.n_folds)


@needs_numba
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_kernel_scores_several_bases_at_once_like_numpy(n_jobs, monkeypatch):
    q, scorer = prepared("lrap", "geo-mean")
    monkeypatch.setattr(kernel.KernelWalker, "min_parallel", 0)
    walker = kernel.KernelWalker(q, scorer, n_jobs=n_jobs)
    bases = [(1, 0, 0, 0, 0, 0, 0), (0, 2, 1, 0, 0, 0, 0), (1, 0, 0, 1, 0, 1, 0)]
    candidates = [[1, 2, 3, 4, 5, 6], [0, 6, 2], [5]]
    sums = [sm.ensemble_sum(q, b) for b in bases]
    got = walker.extensions_many(sums, candidates)
    for base, S, cands, part in zip(bases, sums, candidates, got):
        expected = np.array([scorer.evaluate(S + q[j], sum(base) + 1) for j in cands])
        np.testing.assert_array_equal(scorer.outputs_from_fold_sums(part), expected)


@needs_numba
def test_exhaustive_steps_visit_every_subset_once():
    chunks = exhaustive.exhaustive_chunks(6, 4)
    masks = np.concatenate([kernel.exhaustive_steps(c, 6, 4)[1] for c in chunks])
    expected = [m for m in range(1, 64) if m.bit_count() <= 4]
    assert sorted(masks.tolist()) == expected


def comparable(result):
    record = result.to_json()
    for volatile in ("seconds", "created", "params"):
        record.pop(volatile)
    return record


@pytest.mark.parametrize("method", ["exhaustive", "greedy", "beam", "ges"])
def test_search_is_identical_on_numpy_kernel_and_torch(method, monkeypatch):
    oof, y, fold, names = pool(seed=3, n_models=6)
    options = {"names": names, "method": method, "nested": True, "n_jobs": 2, "ges_iterations": 8}
    with monkeypatch.context() as patch:
        patch.setattr(kernel, "available", lambda: False)
        reference = search_arrays(oof, y, fold, device="cpu", **options)
    assert reference.params["backend"].startswith("numpy")
    results = [search_arrays(oof, y, fold, device="cpu", **options)]
    # the torch path, run on the CPU in place of a CUDA device
    monkeypatch.setattr(backends, "cuda_device", lambda device: "cpu")
    results.append(search_arrays(oof, y, fold, device="cuda", **options))
    assert results[-1].params["backend"] == "torch:cpu"
    for result in results:
        assert comparable(result) == comparable(reference)


def test_cuda_without_a_device_is_a_clear_option_error(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    oof, y, fold, names = pool(n_models=3)
    with pytest.raises(OptionError, match="no CUDA device"):
        search_arrays(oof, y, fold, names=names, device="cuda")
    with pytest.raises(OptionError, match="unknown device 'tpu'"):
        search_arrays(oof, y, fold, names=names, device="tpu")


def test_other_metrics_keep_the_numpy_scorer_on_every_device():
    oof, y, fold, names = pool(n_models=3)
    result = search_arrays(oof, y, fold, names=names, metric="log_loss", blend="mean",
                           method="exhaustive", device="cpu")
    assert result.params["backend"].startswith("numpy")


def test_importing_the_search_loads_neither_numba_nor_torch():
    code = ("import sys, stacker.search.engine, stacker.layout; "
            "print(sorted(m for m in ('numba', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("blend_method", ["geo-mean", "mean", "rank", "power"])
def test_reported_scores_are_stack_blends_bit_for_bit(blend_method):
    """The report reuses each member's transform; its numbers must still be exactly those of
    stacker.blend.blend, what `stack blend` prints."""
    from stacker.blend import blend_arrays as blend
    from stacker.metrics import lwlrap

    oof, y, fold, names = pool(seed=4, n_models=5)
    result = search_arrays(oof, y, fold, names=names, method="exhaustive", blend=blend_method,
                           top=8)
    for candidate in [*result.top, *result.by_size]:
        idx = [names.index(m) for m in candidate.members]
        assert candidate.cv == lwlrap(y, blend(oof[:, idx], blend_method))
    for entry in result.nested_folds:
        idx = [names.index(m) for m in entry.members]
        held = fold == entry.fold
        assert entry.cv == lwlrap(y[held], blend(oof[held][:, idx], blend_method))


def test_the_scorer_s_pairs_of_positives_are_the_plain_loop_s():
    """RankScorer's pairs (a, b) of distinct positives of one row, built vectorised, are the
    plain loop's: row by row, a in order, then every other b in order."""
    from stacker.search.scoring import make_scorer

    rng = np.random.default_rng(0)
    for trial in range(30):
        n, c = int(rng.integers(1, 60)), int(rng.integers(2, 9))
        y = (rng.random((n, c)) < rng.random()).astype(float)
        y[0, 0] = 1
        fold = rng.integers(0, 3, n)
        s = make_scorer(y, fold, sorted(np.unique(fold)), "lwlrap", blend="geo-mean", power=1.0)
        truth = y[s.rows] > 0
        pos_rows, _ = np.nonzero(truth)
        n_pos = np.bincount(pos_rows, minlength=len(s.rows))
        rank = np.arange(len(pos_rows)) - np.repeat(np.cumsum(n_pos) - n_pos, n_pos)
        order = np.lexsort((pos_rows, rank))
        position = np.empty(len(order), np.int64)
        position[order] = np.arange(len(order))
        a_list, b_list = [], []
        for first, count in zip(np.cumsum(n_pos) - n_pos, n_pos):
            members = position[first:first + count]
            a_list += [a for a in members for b in members if a != b]
            b_list += [b for a in members for b in members if a != b]
        np.testing.assert_array_equal(s.pairs_a, np.asarray(a_list, np.int64), err_msg=str(trial))
        np.testing.assert_array_equal(s.pairs_b, np.asarray(b_list, np.int64), err_msg=str(trial))
