"""Binary nodule masks drawn to order: the input a mask-to-nodule generator turns into a CT patch.

A mask is a uint8 [H, W] image, 255 inside the nodule and 0 outside, centred in the patch (as the nodule is in
every training patch).  Its size is asked for in millimetres: at the phantoms' and the datasets' default scale a
64-pixel patch is 44.8 mm across (0.7 mm per pixel), so a 6 mm nodule is about 8.6 pixels wide.

The outline is a closed curve r(theta) around the centre:
* round:       a slightly elliptic circle (axis ratio 0.85-1.0, any orientation);
* lobulated:   the circle plus low harmonics (2-5 lobes) of 10-20% of the radius;
* spiculated:  the lobulated outline plus 4-9 thin, tapering spikes of 30-80% of the radius.
The diameter is that of the circle of equal area, so a mask of D mm has the area of a D mm disc whatever its
shape (spikes included, to within a pixel's rounding).  Everything is drawn from one NumPy RandomState per mask,
keyed by (seed, index): mask i is the same whatever the count or the other masks.
"""
import numpy as np

SHAPES = ('round', 'lobulated', 'spiculated')
DEFAULT_MM_PER_PIXEL = 0.7
MIN_DIAMETER_MM = 1.0     # below two pixels a mask is a dot, not a shape
_ANGLES = 720             # samples of the outline
_SUPERSAMPLE = 4          # sub-pixel samples per axis: the outline's area is right to a fraction of a pixel


def max_diameter_mm(resolution=64, mm_per_pixel=DEFAULT_MM_PER_PIXEL):
    """The largest diameter whose spikes and lobes still fit inside the patch (half its width)."""
    return 0.5 * resolution * mm_per_pixel


def outline_radii(shape, radius, rs):
    """r(theta) of one mask outline in pixels, at _ANGLES equally spaced angles, before the area is fixed."""
    theta = np.linspace(0.0, 2.0 * np.pi, _ANGLES, endpoint=False)
    axis_ratio = rs.uniform(0.85, 1.0)
    tilt = rs.uniform(0.0, np.pi)
    # An ellipse in polar form: r = ab / sqrt((b cos)^2 + (a sin)^2), semi-axes a = 1, b = axis_ratio.
    r = axis_ratio / np.sqrt((axis_ratio * np.cos(theta - tilt)) ** 2 + np.sin(theta - tilt) ** 2)
    if shape in ('lobulated', 'spiculated'):
        for harmonic in range(2, 6):
            amplitude = rs.uniform(0.10, 0.20) / (harmonic - 1)
            r = r + amplitude * np.cos(harmonic * theta + rs.uniform(0.0, 2.0 * np.pi))
    if shape == 'spiculated':
        for _ in range(rs.randint(4, 10)):
            centre, length, width = rs.uniform(0.0, 2.0 * np.pi), rs.uniform(0.3, 0.8), rs.uniform(0.04, 0.08)
            distance = np.angle(np.exp(1j * (theta - centre)))       # signed angle to the spike's axis
            r = r + length * np.clip(1.0 - np.abs(distance) / width, 0.0, None)  # tapering to a point
    return radius * r


def rasterize(radii, resolution):
    """uint8 mask of the star-shaped region r < radii(theta) around the patch centre (pixel centres at i + 0.5)."""
    fine = resolution * _SUPERSAMPLE
    coords = (np.arange(fine) + 0.5) / _SUPERSAMPLE - resolution / 2.0
    y, x = np.meshgrid(coords, coords, indexing='ij')
    angle_index = np.round(np.mod(np.arctan2(y, x), 2.0 * np.pi) / (2.0 * np.pi) * _ANGLES).astype(np.int64)
    inside = np.hypot(x, y) < radii[angle_index % _ANGLES]
    coverage = inside.reshape(resolution, _SUPERSAMPLE, resolution, _SUPERSAMPLE).mean(axis=(1, 3))
    return np.where(coverage >= 0.5, 255, 0).astype(np.uint8)


def draw_mask(diameter_mm, shape='round', seed=0, index=0, resolution=64, mm_per_pixel=DEFAULT_MM_PER_PIXEL):
    """One centred binary mask [resolution, resolution] uint8 (0/255) of equal-area diameter `diameter_mm`."""
    if shape not in SHAPES:
        raise ValueError('unknown mask shape %r (known: %s)' % (shape, ', '.join(SHAPES)))
    if not MIN_DIAMETER_MM <= diameter_mm <= max_diameter_mm(resolution, mm_per_pixel):
        raise ValueError('a diameter of %g mm does not fit a %d-pixel patch at %g mm per pixel (%g to %g mm)'
                         % (diameter_mm, resolution, mm_per_pixel, MIN_DIAMETER_MM,
                            max_diameter_mm(resolution, mm_per_pixel)))
    rs = np.random.RandomState([seed % 2 ** 32, index % 2 ** 32])
    radius = 0.5 * diameter_mm / mm_per_pixel
    radii = outline_radii(shape, radius, rs)
    # Scale the outline so that its area (half the integral of r^2 over theta) is that of the requested disc.
    area = 0.5 * np.mean(radii ** 2) * 2.0 * np.pi
    radii = radii * np.sqrt(np.pi * radius ** 2 / area)
    return rasterize(np.minimum(radii, resolution / 2.0 - 0.5), resolution)


def draw_masks(diameter_mm, number, shape='round', seed=0, resolution=64, mm_per_pixel=DEFAULT_MM_PER_PIXEL):
    """`number` masks [N, H, W] uint8 of one diameter and shape; mask i depends only on (seed, i)."""
    return np.stack([draw_mask(diameter_mm, shape, seed, i, resolution, mm_per_pixel) for i in range(number)])


def equivalent_diameter_mm(mask, mm_per_pixel=DEFAULT_MM_PER_PIXEL):
    """Diameter of the disc with the area of a mask's foreground (pixels > 127)."""
    return 2.0 * np.sqrt(np.count_nonzero(np.asarray(mask) > 127) / np.pi) * mm_per_pixel
