"""nodules/metrics/prdc.py and neighbours.py against a brute-force reference written from the papers' definitions.

The reference loops over every pair with np.linalg.norm and sorts each sample's distances to the others of its set
(Kynkaanniemi et al. 2019, eqs. 1-3: k-NN balls and precision/recall; Naeem et al. 2020, eqs. 4-5: density and
coverage), closed balls (<=) as the module documents; it shares no code with the module.
"""
import numpy as np
import pytest

from nodules.metrics import neighbours, prdc


def kth_radius(points, i, k):
    """Distance from points[i] to its k-th nearest other point, by sorting."""
    others = [np.linalg.norm(points[i] - points[j]) for j in range(len(points)) if j != i]
    return sorted(others)[k - 1]


def reference(real, fake, k_pr, k_dc):
    real_r = {k: [kth_radius(real, i, k) for i in range(len(real))] for k in (k_pr, k_dc)}
    fake_r = [kth_radius(fake, j, k_pr) for j in range(len(fake))]
    d = [[np.linalg.norm(real[i] - fake[j]) for j in range(len(fake))] for i in range(len(real))]
    n, m = len(real), len(fake)
    precision = np.mean([any(d[i][j] <= real_r[k_pr][i] for i in range(n)) for j in range(m)])
    recall = np.mean([any(d[i][j] <= fake_r[j] for j in range(m)) for i in range(n)])
    density = sum(d[i][j] <= real_r[k_dc][i] for i in range(n) for j in range(m)) / float(k_dc * m)
    coverage = np.mean([min(d[i]) <= real_r[k_dc][i] for i in range(n)])
    return dict(precision=precision, recall=recall, density=density, coverage=coverage)


@pytest.mark.parametrize('n, m, dim, k_pr, k_dc, shift', [(30, 25, 4, 3, 5, 0.5), (12, 40, 7, 2, 4, 0.0),
                                                        (40, 10, 2, 3, 5, 1.5)])
def test_prdc_matches_the_brute_force_reference(n, m, dim, k_pr, k_dc, shift):
    rng = np.random.RandomState(n + m)
    real = rng.randn(n, dim)
    fake = 1.3 * rng.randn(m, dim) + shift
    expected = reference(real, fake, k_pr, k_dc)
    got = prdc.prdc(real, fake, k_precision_recall=k_pr, k_density_coverage=k_dc)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key
    assert (got['k_precision_recall'], got['k_density_coverage'], got['real_count'], got['fake_count']) == \
        (k_pr, k_dc, n, m)
    # Blocks of a single row give the same figures (the memory bound changes nothing)
    assert prdc.prdc(real, fake, k_pr, k_dc, max_block_bytes=1) == got


def test_prdc_separates_one_distribution_from_a_shifted_one():
    rng = np.random.RandomState(0)
    real, same, far = rng.randn(400, 8), rng.randn(400, 8), rng.randn(400, 8) + 10.0
    alike = prdc.prdc(real, same)
    assert alike['precision'] > 0.6 and alike['recall'] > 0.6 and alike['coverage'] > 0.8
    assert 0.7 < alike['density'] < 1.3
    apart = prdc.prdc(real, far)
    assert apart == dict(apart, precision=0.0, recall=0.0, density=0.0, coverage=0.0)


def test_duplicates_are_neighbours_and_copies_are_inside():
    """A sample's own index, not its zero distance, is left out of its neighbours: duplicates count."""
    points = np.array([[0.0], [0.0], [1.0], [3.0]])
    assert neighbours.kth_neighbour_radii(points, 1).tolist() == [0.0, 0.0, 1.0, 2.0]
    assert neighbours.kth_neighbour_radii(points, 2).tolist() == [1.0, 1.0, 1.0, 3.0]
    real = np.random.RandomState(1).rand(20, 3)
    copies = prdc.prdc(real, real.copy())
    assert copies['precision'] == 1.0 and copies['coverage'] == 1.0 and copies['recall'] == 1.0


def test_distances_are_exact_for_copies_of_large_pixel_vectors():
    """Centred blocks: a copied 64x64 patch on the 0..255 scale comes out at distance ~0, not several grey levels."""
    patches = np.random.RandomState(2).randint(0, 256, size=(5, 64, 64)).astype(np.uint8)
    distances, indices = neighbours.nearest(patches[[3, 1]], patches)
    assert indices.tolist() == [3, 1] and distances.max() < 1e-3


def test_input_checks():
    real = np.zeros((5, 3))
    with pytest.raises(ValueError, match='at least 4 samples'):
        prdc.prdc(real[:3], real, k_precision_recall=3)
    with pytest.raises(ValueError, match='one feature space'):
        prdc.prdc(real, np.zeros((5, 4)))
    with pytest.raises(ValueError, match='NaN or infinite'):
        prdc.prdc(real, np.full((6, 3), np.nan))
    with pytest.raises(ValueError, match='empty'):
        neighbours.nearest(np.zeros((0, 3)), real)

