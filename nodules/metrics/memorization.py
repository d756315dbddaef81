"""Did the generator copy its training nodules?  A nearest-neighbour audit.

d(x) = distance from x to its nearest training patch.  Real held-out patches (nodules the generator never saw)
say how close a new sample of the same distribution comes to the training set by chance; generated patches are
compared with that:
  median_ratio    = median d(generated) / median d(held-out)   ~1 for a generator that does not copy, << 1 if
                    it does (and > 1 when it draws something farther from the data than new real nodules are)
  near_copy_share = share of generated patches with d below the 5th percentile of the held-out d
                    ~0.05 for a generator that does not copy, -> 1 for one that returns its training patches
The closest generated/training pairs are kept (indices and distances) and drawn side by side by pairs_png(), so a
reader can judge them by eye.

Distances are Euclidean, in pixel space by default (uint8 patches on the 0..255 scale, flattened), or in any
feature space the caller brings (arrays [N, ...], the same for all three sets).  Memory stays bounded: distances
are computed a block of rows at a time (neighbours.py).  Plain NumPy (1.16 and later): both stacks.

The one home of the audit: compute_metrics.py --metrics memorization and the per-fold audit of 4-classify.py call
audit() and pairs_png().
"""
import numpy as np

from nodules.metrics import neighbours

NEAR_COPY_PERCENTILE = 5.0  # held-out percentile below which a generated patch counts as a near copy
CLOSEST_PAIRS = 8           # generated/training pairs kept and drawn


def audit(generated, heldout, training, near_copy_percentile=NEAR_COPY_PERCENTILE, closest_pairs=CLOSEST_PAIRS,
          max_block_bytes=neighbours.MAX_BLOCK_BYTES):
    """Nearest-training-patch distances of `generated` against those of `heldout` (arrays [N, ...], one space).

    Returns a dict (JSON-ready): median_ratio, near_copy_share, near_copy_threshold (the held-out percentile),
    near_copy_percentile, median_generated, median_heldout, generated_count, heldout_count, training_count,
    closest_pairs (a list of {'generated', 'training', 'distance'}, nearest first, at most `closest_pairs`).
    """
    if not 0.0 < near_copy_percentile < 100.0:
        raise ValueError('near_copy_percentile must lie between 0 and 100, got %r' % (near_copy_percentile,))
    generated, training = neighbours.check_pair(generated, training, ('generated', 'training'))
    heldout, _ = neighbours.check_pair(heldout, training, ('held-out', 'training'))
    d_generated, nearest_training = neighbours.nearest(generated, training, max_block_bytes)
    d_heldout, _ = neighbours.nearest(heldout, training, max_block_bytes)
    threshold = float(np.percentile(d_heldout, near_copy_percentile))
    median_generated, median_heldout = float(np.median(d_generated)), float(np.median(d_heldout))
    order = np.argsort(d_generated, kind='mergesort')[:closest_pairs]  # stable: ties keep the generation order
    return dict(
        median_ratio=median_generated / median_heldout if median_heldout > 0 else float('inf'),
        near_copy_share=float(np.mean(d_generated < threshold)),
        near_copy_threshold=threshold,
        near_copy_percentile=float(near_copy_percentile),
        median_generated=median_generated,
        median_heldout=median_heldout,
        generated_count=int(len(generated)),
        heldout_count=int(len(heldout)),
        training_count=int(len(training)),
        closest_pairs=[dict(generated=int(g), training=int(nearest_training[g]), distance=float(d_generated[g]))
                       for g in order])


def _as_tiles(images):
    """uint8 [N, H, W] (or [N, H, W, 3]) from [N, H, W], [N, 1, H, W], [N, 3, H, W] or [N, H, W, 1|3]."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError('pairs_png draws uint8 images, got %s' % images.dtype)
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        images = images.transpose(0, 2, 3, 1)  # channels first -> last
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4):
        raise ValueError('pairs_png needs images [N, H, W] or with a channel axis, got shape %s' % (images.shape,))
    return images


def pairs_png(generated_images, training_images, closest_pairs, padding=2):
    """PNG bytes: the closest pairs side by side, generated patches in the top row and the training patch
    nearest to each right below it, nearest pair on the left.  `closest_pairs` is audit()'s list (indices into
    the image arrays, which need not be the arrays the distances were computed on, e.g. for a feature space)."""
    from nodules.util import outputs  # Pillow, only when a picture is asked for
    if not closest_pairs:
        raise ValueError('pairs_png: no pairs to draw')
    generated_images, training_images = _as_tiles(generated_images), _as_tiles(training_images)
    top = generated_images[[pair['generated'] for pair in closest_pairs]]
    bottom = training_images[[pair['training'] for pair in closest_pairs]]
    return outputs.mosaic_png(np.concatenate([top, bottom]), columns=len(closest_pairs), padding=padding)


def summary_lines(result, space='pixels'):
    """Human-readable lines of an audit() result, for terminals and reports."""
    lines = ['Memorization audit (%s space; d = distance to the nearest training patch; %d generated, %d held-out, '
             '%d training)' % (space, result['generated_count'], result['heldout_count'], result['training_count']),
             '  %-40s %10.3f   (~1 = no copying, << 1 = copies)' % ('median d(generated) / median d(held-out)',
                                                                     result['median_ratio']),
             '  %-40s %10.3f   (~%.2f = no copying, -> 1 = copies)'
             % ('near-copy share (d < held-out p%g = %.1f)' % (result['near_copy_percentile'],
                                                              result['near_copy_threshold']),
                result['near_copy_share'], result['near_copy_percentile'] / 100.0),
             '  %-40s %10.1f / %.1f' % ('median d: generated / held-out', result['median_generated'],
                                         result['median_heldout'])]
    if result['closest_pairs']:
        lines.append('  closest pairs (generated -> training: d): ' + ', '.join(
            '%d->%d: %.1f' % (p['generated'], p['training'], p['distance']) for p in result['closest_pairs']))
    return lines
