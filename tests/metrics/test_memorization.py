"""nodules/metrics/memorization.py: the audit flags a generator that returns its training patches and not one that
draws new samples of the same distribution; distances against a brute-force reference; the picture of the pairs."""
import io

import numpy as np
import pytest
from PIL import Image

from nodules.data import phantoms
from nodules.metrics import memorization, neighbours


@pytest.fixture(scope='module')
def patches():
    """Three independent sets of one-view AIS phantoms (200 each): training, held-out and 'fresh' samples."""
    return {name: phantoms.make_phantoms('AIS', 200, seed) for name, seed in
            (('training', 11), ('heldout', 12), ('fresh', 13))}


def brute_force_nearest(queries, reference):
    q = queries.reshape(len(queries), -1).astype(np.float64)
    r = reference.reshape(len(reference), -1).astype(np.float64)
    d = np.array([[np.sqrt(np.sum((a - b) ** 2)) for b in r] for a in q])
    return d.min(axis=1), d.argmin(axis=1)


def test_nearest_matches_brute_force_in_any_block_size(patches):
    queries, reference = patches['fresh'][:15], patches['training'][:40]
    expected_d, expected_i = brute_force_nearest(queries, reference)
    for budget in (1, 20000, neighbours.MAX_BLOCK_BYTES):
        d, i = neighbours.nearest(queries, reference, max_block_bytes=budget)
        assert i.tolist() == expected_i.tolist()
        assert d == pytest.approx(expected_d, rel=1e-9)


def test_a_generator_that_returns_its_training_patches_is_flagged(patches):
    training = patches['training']
    copies = training[np.random.RandomState(0).permutation(len(training))[:150]]
    result = memorization.audit(copies, patches['heldout'], training)
    assert result['near_copy_share'] == 1.0
    assert result['median_ratio'] < 1e-4
    assert all(pair['distance'] < 1e-3 for pair in result['closest_pairs'])
    assert [np.array_equal(copies[p['generated']], training[p['training']]) for p in result['closest_pairs']] == \
        [True] * memorization.CLOSEST_PAIRS


def test_new_samples_of_the_same_distribution_are_not_flagged(patches):
    """Held-out and fresh patches are exchangeable: ~5% of the fresh ones fall below the held-out 5th percentile."""
    result = memorization.audit(patches['fresh'], patches['heldout'], patches['training'])
    assert 0.0 <= result['near_copy_share'] <= 0.15
    assert 0.85 < result['median_ratio'] < 1.15
    d_heldout, _ = brute_force_nearest(patches['heldout'][:20], patches['training'])
    assert result['generated_count'] == result['heldout_count'] == result['training_count'] == 200
    assert result['near_copy_threshold'] <= result['median_heldout']
    assert np.median(d_heldout) == pytest.approx(result['median_heldout'], rel=0.3)  # same scale, from 20 of them
    closest = [pair['distance'] for pair in result['closest_pairs']]
    assert closest == sorted(closest) and len(closest) == memorization.CLOSEST_PAIRS


def test_a_generator_half_made_of_copies_shows_half(patches):
    mixed = np.concatenate([patches['training'][:100], patches['fresh'][:100]])
    result = memorization.audit(mixed, patches['heldout'], patches['training'])
    assert 0.5 <= result['near_copy_share'] <= 0.6
    assert {pair['generated'] for pair in result['closest_pairs']} <= set(range(100))


def test_any_feature_space_works():
    """Features instead of pixels: the same audit on arrays [N, F] (e.g. a classifier's penultimate layer)."""
    rng = np.random.RandomState(3)
    training, heldout = rng.randn(300, 16), rng.randn(300, 16)
    result = memorization.audit(training[:50] + 1e-6, heldout, training)
    assert result['near_copy_share'] == 1.0
    with pytest.raises(ValueError, match='one feature space'):
        memorization.audit(training[:, :8], heldout, training)
    with pytest.raises(ValueError, match='between 0 and 100'):
        memorization.audit(heldout, heldout, training, near_copy_percentile=0)


def test_picture_of_the_closest_pairs(patches):
    generated, training = patches['fresh'], patches['training']
    result = memorization.audit(generated, patches['heldout'], training)
    png = memorization.pairs_png(generated[:, np.newaxis], training, result['closest_pairs'], padding=2)
    picture = np.asarray(Image.open(io.BytesIO(png)))
    assert picture.shape == (2 * 64 + 2, 8 * 64 + 7 * 2)
    for column, pair in enumerate(result['closest_pairs']):
        left = column * (64 + 2)
        assert np.array_equal(picture[:64, left:left + 64], generated[pair['generated']])
        assert np.array_equal(picture[66:, left:left + 64], training[pair['training']])
    lines = memorization.summary_lines(result)
    assert 'near-copy share' in '\n'.join(lines) and len(lines) == 5
