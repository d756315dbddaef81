"""Masks drawn to order (nodules/pix2pix/masks.py): their size, shape and repeatability."""
import numpy as np
import pytest

from nodules.pix2pix import masks


def perimeter_pixels(mask):
    """Foreground pixels with a background 4-neighbour: a rough outline length."""
    inside = np.pad(mask > 127, 1, mode='constant')
    core = inside[1:-1, 1:-1]
    neighbours_in = inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:]
    return np.count_nonzero(core & ~neighbours_in)


@pytest.mark.parametrize('shape', masks.SHAPES)
@pytest.mark.parametrize('diameter', [4.0, 6.0, 8.0, 10.0])
def test_masks_have_the_area_of_the_requested_disc(shape, diameter):
    drawn = masks.draw_masks(diameter, 12, shape, seed=3)
    assert drawn.shape == (12, 64, 64) and drawn.dtype == np.uint8
    assert set(np.unique(drawn)) <= {0, 255}
    sizes = [masks.equivalent_diameter_mm(m) for m in drawn]
    # Independent check: count the pixels and compare with the disc's area in pixels (0.7 mm per pixel).
    radius = diameter / 2 / 0.7
    expected_pixels = np.pi * radius ** 2
    for m in drawn:  # a digital outline gains or loses up to about a quarter pixel along its length
        assert abs(np.count_nonzero(m) - expected_pixels) <= 3.0 + 0.25 * 2 * np.pi * radius
    assert abs(np.mean(sizes) - diameter) < 0.25


def test_masks_are_centred_and_fit_the_patch():
    for shape in masks.SHAPES:
        m = masks.draw_mask(masks.max_diameter_mm(), shape, seed=1)
        rows, cols = np.nonzero(m)
        assert abs(rows.mean() - 31.5) < 2.0 and abs(cols.mean() - 31.5) < 2.0
        assert m[0].max() == 0 and m[-1].max() == 0 and m[:, 0].max() == 0 and m[:, -1].max() == 0


def test_shapes_differ_in_outline_not_in_area():
    by_shape = {s: masks.draw_masks(8.0, 16, s, seed=5) for s in masks.SHAPES}
    outline = {s: np.mean([perimeter_pixels(m) for m in by_shape[s]]) for s in masks.SHAPES}
    assert outline['round'] < outline['lobulated'] < outline['spiculated']


def test_each_mask_depends_only_on_seed_and_index():
    five = masks.draw_masks(6.0, 5, 'lobulated', seed=9)
    assert np.array_equal(masks.draw_masks(6.0, 3, 'lobulated', seed=9), five[:3])
    assert np.array_equal(masks.draw_mask(6.0, 'lobulated', seed=9, index=4), five[4])
    assert not np.array_equal(masks.draw_masks(6.0, 5, 'lobulated', seed=10), five)
    assert not np.array_equal(five[0], five[1])


def test_other_resolutions_keep_the_field_of_view():
    small = masks.draw_mask(8.0, 'round', seed=2, resolution=32, mm_per_pixel=1.4)
    assert small.shape == (32, 32)
    assert abs(masks.equivalent_diameter_mm(small, mm_per_pixel=1.4) - 8.0) < 0.8


@pytest.mark.parametrize('diameter', [0.5, 23.0, float('nan')])
def test_sizes_that_do_not_fit_are_refused(diameter):
    with pytest.raises(ValueError, match='does not fit'):
        masks.draw_mask(diameter)


def test_unknown_shape_is_refused():
    with pytest.raises(ValueError, match='unknown mask shape'):
        masks.draw_mask(6.0, 'square')
