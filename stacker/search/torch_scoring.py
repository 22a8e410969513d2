"""The torch scoring path of the subset search (lwlrap, lrap), for a CUDA device.

The same exact scheme as the numpy scorer: the int64 fixed-point sums of the members are formed on
the device for a whole batch of candidates at once, the integer counts at every positive (classes
at or above it, positives at or above it) are computed there, and the counts come back to
:meth:`RankScorer.fold_sums_from_counts`, so the scores are bit-identical to the numpy and
compiled paths. It runs on any torch device; the tests run it on the CPU.

The exhaustive search goes level by level: the children of a batch of subsets (each parent plus
one model numbered above its last member) are formed from the parents' sums in batches of at most
``batch_bytes``, scored, and expanded in turn, so memory holds one batch per level.
"""

from __future__ import annotations

import numpy as np

DEFAULT_BATCH_BYTES = {"cuda": 2 << 30, "cpu": 64 << 20}


class TorchWalker:
    """Scores batches of candidate sums with torch on ``device`` ("cuda", "cuda:1", "cpu").

    q: (n_models, n_rows, n_classes) int64, rows in ``scorer.rows`` order; scorer: RankScorer.
    """

    def __init__(self, q: np.ndarray, scorer, device: str = "cuda", batch_bytes: int | None = None):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.name = f"torch:{self.device}"
        self.scorer = scorer
        self.n_models = q.shape[0]
        self.q = torch.as_tensor(np.ascontiguousarray(q)).to(self.device)
        per_sum = max(1, q[0].size * 8 * 3)       # a sum, its comparison mask and a copy
        budget = batch_bytes or DEFAULT_BATCH_BYTES.get(self.device.type, 64 << 20)
        self.batch = max(1, int(budget // per_sum))
        as_index = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64)).to(self.device)
        self.pos_flat = as_index(scorer.pos_flat)
        self.pass_size = list(scorer.pass_size)
        self.pass_start = [int(v) for v in scorer.pass_start]
        self.pairs_a = as_index(scorer.pairs_a)
        self.pairs_b = as_index(scorer.pairs_b)
        self.row_major = as_index(scorer.row_major)

    def _sums(self, S) -> np.ndarray:
        """Per-fold sums (B, n_folds) of a batch of sums S of shape (B, n_rows, n_classes)."""
        torch = self.torch
        B = S.shape[0]
        scores = S.reshape(B, -1)[:, self.pos_flat]                      # (B, n_positives)
        at_or_above = torch.empty_like(scores)
        for j, size in enumerate(self.pass_size):
            lo, hi = self.pass_start[j], self.pass_start[j + 1]
            at_or_above[:, lo:hi] = (S[:, :size, :] >= scores[:, lo:hi, None]).sum(dim=2)
        hits = torch.ones_like(scores)
        if len(self.pairs_a):
            hits.index_add_(1, self.pairs_a,
                            (scores[:, self.pairs_b] >= scores[:, self.pairs_a]).to(scores.dtype))
        hits = hits[:, self.row_major].cpu().numpy()
        at_or_above = at_or_above[:, self.row_major].cpu().numpy()
        return self.scorer.fold_sums_from_counts(hits, at_or_above)

    def extensions(self, base_sum: np.ndarray, candidates) -> np.ndarray:
        """Per-fold sums (len(candidates), n_folds) of ``base_sum + q[j]`` for each candidate j."""
        torch = self.torch
        candidates = list(candidates)
        if not candidates:
            return np.zeros((0, self.scorer.n_folds))
        base = torch.as_tensor(np.ascontiguousarray(base_sum)).to(self.device)
        out = []
        for lo in range(0, len(candidates), self.batch):
            index = torch.as_tensor(candidates[lo:lo + self.batch], device=self.device)
            out.append(self._sums(base[None] + self.q[index]))
        return np.concatenate(out)

    def exhaustive(self, chunk, max_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(masks (n,), per-fold sums (n, n_folds)) of every subset of ``chunk`` (see
        :func:`stacker.search.kernel.exhaustive_steps`; the order differs, the set does not)."""
        torch = self.torch
        masks: list = []
        sums: list = []
        for prefix, extend in chunk:
            mask = sum(1 << m for m in prefix)
            if prefix:
                S = self.q[list(prefix)].sum(dim=0, keepdim=True)
                masks.append(np.array([mask], dtype=np.int64))
                sums.append(self._sums(S))
            else:
                S = torch.zeros((1,) + tuple(self.q.shape[1:]), dtype=self.q.dtype, device=self.device)
            if extend:
                self._expand(S, np.array([prefix[-1] if prefix else -1]), np.array([mask]),
                             len(prefix), max_size, masks, sums)
        if not masks:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.scorer.n_folds))
        return np.concatenate(masks), np.concatenate(sums)

    def _expand(self, parents, lasts, parent_masks, depth, max_size, masks, sums) -> None:
        if depth >= max_size:
            return
        pairs = [(b, j) for b, last in enumerate(lasts) for j in range(int(last) + 1, self.n_models)]
        for lo in range(0, len(pairs), self.batch):
            part = np.asarray(pairs[lo:lo + self.batch], dtype=np.int64)
            b, j = part[:, 0], part[:, 1]
            children = (parents[self.torch.as_tensor(b, device=self.device)]
                        + self.q[self.torch.as_tensor(j, device=self.device)])
            child_masks = parent_masks[b] | (np.int64(1) << j)
            masks.append(child_masks)
            sums.append(self._sums(children))
            self._expand(children, j, child_masks, depth + 1, max_size, masks, sums)
