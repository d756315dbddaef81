"""Fidelity and diversity, separately: improved precision and recall (Kynkaanniemi et al. 2019) and density and
coverage (Naeem et al. 2020), k-nearest-neighbour estimates of two distributions in a feature space.

Each real sample x_i spans a ball whose radius r_k(x_i) is the distance to its k-th nearest other real sample
(likewise each generated sample y_j, with radius s_k(y_j) among the generated ones).  Balls are closed (<=):
  precision = share of generated samples inside at least one real ball                        (k = 3)
  recall    = share of real samples inside at least one generated ball                        (k = 3)
  density   = mean over generated samples of the number of real balls they lie in, / k       (k = 5)
  coverage  = share of real samples whose ball holds at least one generated sample            (k = 5)
Precision, recall and coverage lie in [0, 1]; density is ~1 when both sets come from one distribution and
exceeds 1 where generated samples crowd dense real regions.  k = 3 and k = 5 are the papers' recommendations.

Why not the authors' package `prdc` (PyPI, 0.2): it pulls in scikit-learn for one Euclidean distance matrix and
computes it with a hard-wired n_jobs=8 (on a 2-core machine shared with others), prints to stdout, takes one k for
all four numbers, holds the full N x M matrix in memory, and scikit-learn is not in our Python 3.6 stack.  The
definitions take a few lines of NumPy (below, on distances from neighbours.py, memory-bounded); tests check
them against a brute-force reference written from the papers.

The feature space is the caller's choice and must be reported with the numbers (compute_metrics.py uses the
z-scored radiomic features of radiomics.py, or raw pixels).  Plain NumPy: both stacks.
"""
import numpy as np

from nodules.metrics import neighbours

PRECISION_RECALL_K = 3    # Kynkaanniemi et al. 2019
DENSITY_COVERAGE_K = 5    # Naeem et al. 2020


def _inside_counts(queries, centres, radii, max_block_bytes):
    """For each query: how many balls (centres[i], radii[i]) hold it, and whether the nearest query reaches each
    ball, i.e. (counts [len(queries)], min distance from each centre to any query [len(centres)])."""
    counts = np.zeros(len(queries), dtype=np.int64)
    closest = np.full(len(centres), np.inf)
    for start, block in neighbours.distance_blocks(queries, centres, max_block_bytes):
        counts[start:start + len(block)] = np.sum(block <= radii[None, :], axis=1)
        closest = np.minimum(closest, block.min(axis=0))
    return counts, closest


def precision_recall(real, fake, k=PRECISION_RECALL_K, max_block_bytes=neighbours.MAX_BLOCK_BYTES):
    """Improved precision and recall of `fake` against `real` (feature arrays [N, ...], [M, ...]): dict."""
    real, fake = neighbours.check_pair(real, fake, ('real features', 'fake features'))
    real_radii = neighbours.kth_neighbour_radii(real, k, max_block_bytes)
    fake_radii = neighbours.kth_neighbour_radii(fake, k, max_block_bytes)
    in_real, _ = _inside_counts(fake, real, real_radii, max_block_bytes)
    in_fake, _ = _inside_counts(real, fake, fake_radii, max_block_bytes)
    return dict(precision=float(np.mean(in_real > 0)), recall=float(np.mean(in_fake > 0)), k=int(k))


def density_coverage(real, fake, k=DENSITY_COVERAGE_K, max_block_bytes=neighbours.MAX_BLOCK_BYTES):
    """Density and coverage of `fake` against `real` (feature arrays [N, ...], [M, ...]): dict."""
    real, fake = neighbours.check_pair(real, fake, ('real features', 'fake features'))
    real_radii = neighbours.kth_neighbour_radii(real, k, max_block_bytes)
    counts, closest_fake = _inside_counts(fake, real, real_radii, max_block_bytes)
    return dict(density=float(np.sum(counts) / float(k * len(fake))),
                coverage=float(np.mean(closest_fake <= real_radii)), k=int(k))


def prdc(real, fake, k_precision_recall=PRECISION_RECALL_K, k_density_coverage=DENSITY_COVERAGE_K,
         max_block_bytes=neighbours.MAX_BLOCK_BYTES):
    """All four: {'precision', 'recall', 'density', 'coverage', 'k_precision_recall', 'k_density_coverage',
    'real_count', 'fake_count'}."""
    pr = precision_recall(real, fake, k_precision_recall, max_block_bytes)
    dc = density_coverage(real, fake, k_density_coverage, max_block_bytes)
    return dict(precision=pr['precision'], recall=pr['recall'], density=dc['density'], coverage=dc['coverage'],
                k_precision_recall=pr['k'], k_density_coverage=dc['k'],
                real_count=int(len(real)), fake_count=int(len(fake)))
