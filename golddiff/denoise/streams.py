"""One seed stream per sample: what makes a sample independent of its batch, its rank and the world
size.

Sample i of a run seeded s draws its start noise from the seed (s, i, 0) and the random pool of
step t from the seed (s, i, 1, t), each expanded by numpy's SeedSequence (a hash of the whole key).
So sample i comes out the same whether it runs alone, in a batch of 8, on rank 3 of 4 or in one
process, and every rank of a sharded corpus draws the same pool for it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

NOISE, POOL, DRAWS, DIAG = 0, 1, 2, 3  # stream kinds in a seed key (DRAWS: adaptive subset
# draws; DIAG: the estimated diagnostics' tail, apart from the sampling streams)


class SampleStreams:
    """The seed streams of samples `ids` (their indices in the whole run) of a run seeded `seed`."""

    def __init__(self, seed: int, ids: Sequence[int]):
        self.seed = int(seed) % 2**63  # SeedSequence takes non-negative entropy
        self.ids = [int(i) for i in ids]

    def __len__(self) -> int:
        return len(self.ids)

    def key(self, i: int, *tail: int) -> int:
        """A 63-bit seed for the stream (seed, i, *tail)."""
        words = np.random.SeedSequence(self.seed, spawn_key=(i, *tail)).generate_state(2)
        return (int(words[0]) << 31 | int(words[1])) & (2**63 - 1)

    def noise(self, D: int) -> torch.Tensor:
        """(B, D) standard normal start noise x_T, row b from sample ids[b]'s own generator."""
        rows = [
            torch.randn(D, generator=torch.Generator().manual_seed(self.key(i, NOISE)))
            for i in self.ids
        ]
        return torch.stack(rows) if rows else torch.empty(0, D)

    def generators(self, kind: int, t: int) -> list[torch.Generator]:
        """One torch generator per sample for stream (seed, i, kind, t), e.g. the adaptive subset's
        importance draws at step t (kind DRAWS)."""
        return [torch.Generator().manual_seed(self.key(i, kind, int(t))) for i in self.ids]

    def rngs(self, kind: int, t: int) -> list[np.random.Generator]:
        """One numpy generator per sample for stream (seed, i, kind, t)."""
        return [np.random.default_rng(self.key(i, kind, int(t))) for i in self.ids]

    def pools(self, N: int, m: int, t: int) -> np.ndarray:
        """(B, m) sorted indices: sample ids[b]'s random pool of m of N images at step t.

        numpy's Generator.choice(replace=False) draws an exactly uniform m-subset (Floyd's
        algorithm for small m, a partial Fisher-Yates shuffle otherwise)."""
        return np.stack(
            [
                np.sort(
                    np.random.default_rng(self.key(i, POOL, int(t))).choice(
                        N, m, replace=False, shuffle=False
                    )
                )
                for i in self.ids
            ]
        )
