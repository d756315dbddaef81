"""Mask fidelity: does the nodule a mask-to-patch generator draws follow the mask it was given?

Each generated patch is segmented by one fixed rule, the same for every patch and every model, and compared
with its mask by the Dice coefficient 2|A n B| / (|A| + |B|):

1. smooth the 8-bit patch with a Gaussian of sigma SMOOTHING_SIGMA_PX pixels (the lung texture's speckle);
2. keep the pixels at or above THRESHOLD_GREY grey levels (-716 HU in the lung window -1500..500 HU of the
   phantoms and the CT datasets: between aerated lung, about -850 HU, and ground glass, about -600 HU);
3. take the 8-connected region of those pixels nearest the patch centre (nodules are centred; vessels and
   other regions elsewhere are left out) and fill its holes.  No region at all segments nothing (Dice 0).

Segmenting the real patch of each mask by the same rule gives the reference on that data: a threshold cannot
follow a faint ground-glass margin, nor separate a nodule from a vessel touching it, so even real patches reach
a Dice well below 1 (about 0.55 median on the AIS phantoms).  It is not a ceiling: a generator that draws a clean
blob of the mask's shape, without the margin and vessels of real nodules, scores above it.
"""
import numpy as np

THRESHOLD_GREY = 100
SMOOTHING_SIGMA_PX = 0.7
RULE = ('Gaussian smoothing (sigma %g px), grey >= %d (-716 HU in the -1500..500 HU window), the 8-connected '
        'region nearest the centre, holes filled' % (SMOOTHING_SIGMA_PX, THRESHOLD_GREY))


def segment_nodule(patch, threshold=THRESHOLD_GREY, sigma=SMOOTHING_SIGMA_PX):
    """bool [H, W]: the nodule of one uint8 patch [H, W] by the rule of the module docstring."""
    from scipy import ndimage
    smooth = ndimage.gaussian_filter(np.asarray(patch, np.float64), sigma, mode='nearest')
    foreground = smooth >= threshold
    regions, count = ndimage.label(foreground, structure=np.ones((3, 3), bool))
    if count == 0:
        return foreground
    rows, cols = np.nonzero(foreground)
    centre = (np.asarray(patch).shape[0] - 1) / 2.0, (np.asarray(patch).shape[1] - 1) / 2.0
    nearest = np.argmin((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2)  # ties: the first in row order
    return ndimage.binary_fill_holes(regions == regions[rows[nearest], cols[nearest]])


def dice(a, b):
    """Dice coefficient of two boolean masks (1 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(a, b).sum() / total


def dice_scores(patches, masks):
    """float64 [N]: Dice between each mask (uint8 0/255 or bool [N, H, W]) and the nodule segmented from its
    patch (uint8 [N, H, W])."""
    if np.shape(patches) != np.shape(masks) or np.ndim(patches) != 3:
        raise ValueError('mask fidelity needs patches and masks of one shape [N, H, W], got %s and %s'
                         % (list(np.shape(patches)), list(np.shape(masks))))
    masks = np.asarray(masks) > 127 if np.asarray(masks).dtype != bool else np.asarray(masks)
    return np.array([dice(segment_nodule(patch), mask) for patch, mask in zip(patches, masks)])


def summary(scores):
    """{mean, median, p10, p90} of Dice scores."""
    scores = np.asarray(scores, np.float64)
    return dict(mean=float(scores.mean()), median=float(np.median(scores)),
                p10=float(np.percentile(scores, 10)), p90=float(np.percentile(scores, 90)))


def mask_fidelity(masks, generated, reals=None):
    """{'rule', 'count', 'generated': summary, 'real': summary or None, 'generated_scores', 'real_scores'}."""
    generated_scores = dice_scores(generated, masks)
    real_scores = dice_scores(reals, masks) if reals is not None else None
    return dict(rule=RULE, count=int(len(masks)), generated=summary(generated_scores),
                real=summary(real_scores) if real_scores is not None else None,
                generated_scores=generated_scores, real_scores=real_scores)
