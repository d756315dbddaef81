"""Tests for nodules/metrics/maskfidelity.py: the segmentation rule and the Dice coefficient."""
import numpy as np
import pytest

from nodules.metrics import maskfidelity
from nodules.pix2pix import masks as mask_drawing


def disc(size=64, centre=(32, 32), radius=8.0):
    rows, cols = np.mgrid[:size, :size]
    return (rows + 0.5 - centre[0]) ** 2 + (cols + 0.5 - centre[1]) ** 2 < radius ** 2


def test_dice_by_counting():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :3] = True            # 3 pixels
    b[0, 1:] = True            # 3 pixels, 2 shared
    assert maskfidelity.dice(a, b) == pytest.approx(2 * 2 / 6.0)
    assert maskfidelity.dice(a, a) == 1.0 and maskfidelity.dice(a, ~a) == 0.0
    assert maskfidelity.dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


def test_a_bright_nodule_on_lung_is_segmented_and_a_vessel_away_from_it_is_not():
    nodule = disc()
    patch = np.full((64, 64), 60, np.uint8)           # aerated lung, well under the threshold
    patch[nodule] = 180                               # a solid nodule
    patch[5:8, :] = 200                               # a vessel across the top, not touching it
    segmented = maskfidelity.segment_nodule(patch)
    assert maskfidelity.dice(segmented, nodule) > 0.95
    assert not segmented[5:8].any()


def test_the_threshold_is_the_documented_grey_level_and_holes_are_filled():
    patch = np.full((64, 64), maskfidelity.THRESHOLD_GREY - 12, np.uint8)
    assert not maskfidelity.segment_nodule(patch).any()  # no region: nothing segmented
    ring = disc(radius=12) & ~disc(radius=6)
    patch[ring] = maskfidelity.THRESHOLD_GREY + 40
    segmented = maskfidelity.segment_nodule(patch)
    assert maskfidelity.dice(segmented, disc(radius=12)) > 0.9     # the dark bubble inside belongs to it


def test_scores_against_drawn_masks():
    masks = mask_drawing.draw_masks(8.0, 3, 'lobulated', seed=1)
    patches = np.where(masks > 0, 170, 70).astype(np.uint8)
    scores = maskfidelity.dice_scores(patches, masks)
    assert np.all(scores > 0.9)
    shifted = np.roll(patches, 20, axis=2)  # the nodule drawn 20 px off: no overlap left
    assert np.all(maskfidelity.dice_scores(shifted, masks) == 0.0)
    result = maskfidelity.mask_fidelity(masks, shifted, patches)
    assert result['generated']['mean'] == 0.0 and result['real']['median'] > 0.9 and result['count'] == 3
    with pytest.raises(ValueError, match='one shape'):
        maskfidelity.dice_scores(patches[:2], masks)
