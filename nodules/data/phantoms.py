"""Synthetic lung-CT phantoms of subcentimetre adenocarcinoma nodules: procedurally drawn images, NOT patient data.

They imitate lung-window CT crops centred on a small nodule, so that the GAN pipeline can be shown and tested
without shipping any scan.  `draw_dataset` draws 3-D phantom nodules and cuts each into several views;
`make_phantoms` draws one view of each of `count` nodules.

The physical model
------------------
Everything is built in Hounsfield units (HU) in a field of view of 64 x 0.7 mm (about 45 mm) and only windowed at
the end, so that densities keep their physical order:

  air -1000 | lung parenchyma about -860 (-900..-820 between patients and inspiration levels) | ground glass
  -750..-300 | fat -120..-80 | muscle and solid tumour +20..+55 | blood +20..+50, contrast-enhanced up to +250 |
  bone marrow +150..+400 | cortical bone +700..+1400

* Parenchyma: a per-patient level, a gravity-dependent gradient of up to 90 HU across the field, a smooth
  density variation (cubic B-spline noise, 5 mm cells) and a finer lobular mottle (1.6 mm cells); in seven
  patches in ten a patchy denser (dependent) region on one side, against the chest wall if there is one, whose
  border the coarse texture makes irregular (no smooth band along the wall).  Sub-millimetre vessels cut across
  by the slice are specks (about 250 per patch, 40% of them clustered within a few mm of a larger vessel) at
  sub-voxel positions, whose HU is the blood's scaled by the fraction of the voxel they fill (partial volume;
  faint ones far more common than bright ones), blurred like everything else.
* Vessels and airways: one or two 3-D trees per patch of tapering, gently curving tubes whose trunk may fork;
  each runs obliquely through the slab, so it moves between adjacent slices, and branches that end inside the
  field thin to a grey sub-voxel tip (they leave the slice).  Most vessels cross the slice: 4-14 round dots and
  4-14 short segments (in the slab for a few mm) whose calibre is drawn from 0.2 to 2 mm radius with small
  ones far more common, 15-40 sub-voxel twigs (small vessels and septa), and now and then a small airway beside
  its artery (a thin tissue ring around air).  A fissure (a faint hairline across the field) in one patch in
  five.  All painted with the exact area each covers in a voxel, so structures thinner than a voxel are grey and
  only thick ones reach the blood value.
* Nodule: an ellipsoid with a lobulated outline (radial Fourier terms that change along z), made of ground
  glass (a partial filling of air spaces: it adds to what is there, so vessels show through it, and small
  vessels cross it as dots and short segments; patchy, with a hazy 1.2-3 mm margin and an outline more
  irregular than a solid nodule's) and/or a solid core at tissue HU (margin 0.35-0.6 mm), both outlines made
  irregular by the lung's fine texture, with optional bubble lucencies (air) and
  spicules (thin strands of fibrosis, in and out of the slice).  Size, composition, solid-core size, margin,
  bubbles and vessel contact are drawn per subtype from the overlapping distributions in `SUBTYPE_MODELS`
  (after the IASLC/ATS/ERS 2011 classification: AIS mostly pure ground glass, MIA mostly part-solid with a
  solid part of at most 5 mm but also pure ground glass, IAC part-solid with a larger solid part or solid,
  occasionally ground glass).  Mean density and diameter alone separate them only partly (a nearest-centroid
  classifier on the paper's 30 / 119 / 57 nodules reaches a balanced accuracy of about 0.65-0.75).
* Chest wall or mediastinum (in four patches in five): a pleura that is crisp (0.2-0.45 mm of partial volume;
  up to 1.2 mm where the slab cuts it obliquely) and no perfect arc - it undulates by 0.6-2.5 mm over 6 mm and
  is finely irregular - then a thin pleural line, extrapleural fat, and muscle with striations and fat planes
  running parallel to the pleura; in three walls in ten a thin band of denser subpleural lung, patchy, 1-2 mm.
  Bones in the wall: a rib in cross section in a third of the walls, now and then the edge of a vertebral
  body or a scapula (a thin plate), each a dense cortex (saturating in the lung window wherever it fills a voxel)
  around brighter marrow, with streaks fanning out from it (bright and dark rays, fading with distance).
* Scanner: a correlated noise texture (B-spline noise of 1.1 mm cells, squared: lung tissue is air with a never
  negative share of tissue, so its texture is skewed towards bright), a Gaussian point-spread function (sigma
  0.3 mm), then the sharpening of a lung reconstruction kernel (image + 0.25 x (image - its 3x3 mean), which
  also gives edges their slight overshoot).  Quantum noise (28-44 HU after filtering) enters before both, so its
  power spectrum is the kernel's: rising with frequency, then rolling off - the fine-grained, correlated noise of
  filtered back projection.
* Display: `grey = clip(rint((HU - low) / (high - low) * 255), 0, 255)` with the window (low, high), by
  default (-1500, 500) HU (width 2000, level -500).  Grey-level statistics of real lung-window nodule patches
  put parenchyma at grey 85-90 and soft tissue at about 190-200, with cortical bone saturated (a few pixels in
  a thousand at 230 or above), which this wide lung window reproduces; the narrower (-1350, 150) window would
  put all soft tissue near white.

Several views per nodule: view j of a nodule is the slice at z_j (within 0.6 of the nodule's z semi-axis, so
the nodule is always cut), with fresh noise and specks, then a small in-plane shift (at most 2 mm) and rotation
(at most 15 degrees) of the whole scene, then one of the eight quarter-turn / flip symmetries.

Reproducibility: every nodule and every view has its own random stream, seeded from (seed, subtype, nodule,
view), so the first nodules of a larger run equal a smaller run and the output does not depend on how the
work is chunked.  Array maths uses only + - * / sqrt, min, max, floor and rint (exact or correctly rounded in
IEEE 754), sums run in a fixed order (np.bincount adds in order), trigonometry and exp go through Python's
math module (the C library) on scalars, and the random numbers come from the frozen legacy RandomState.  So
NumPy 1.16 and NumPy 2.x - whose SIMD exp, sin and pow may differ in the last bit - give identical bytes.
"""
import math
from itertools import accumulate

import numpy as np

from nodules.util import values

SUBTYPES = ('AIS', 'MIA', 'IAC')
KINDS = ('ground-glass', 'part-solid', 'solid')
DEFAULT_WINDOW = (-1500.0, 500.0)
DEFAULT_MM_PER_PIXEL = 0.7
# What a phantom's nodule mask covers (draw_dataset(masks=True)); datasets record it in their metadata.
MASK_DEFINITION = ('the nodule in the slice: pixels whose centre lies inside the outline of its ground glass or its '
                   'solid part (the middle of the soft margin, the lung texture\'s irregularity included, bubbles '
                   'included, spicules and vessels excluded), in the image\'s orientation')

# Per-subtype distributions of the nodule, overlapping on purpose (pathology labels, not CT appearances).
#   kinds:          probabilities of pure ground glass, part-solid and solid
#   diameter_mm:    mean and standard deviation of the whole nodule, clipped to 4..10 mm
#   glass_hu:       mean and standard deviation of the ground-glass attenuation, clipped to -750..-300 HU
#   solid_fraction: range of the solid core's diameter over the nodule's in part-solid nodules
#   solid_max_mm:   cap on the solid core's diameter (MIA: invasive part at most 5 mm)
#   lobulation:     largest relative amplitude of the outline's low harmonics
#   spiculated, bubbles, vessel_contact: probabilities
SUBTYPE_MODELS = {
    'AIS': dict(kinds=(0.85, 0.15, 0.00), diameter_mm=(6.0, 1.4), glass_hu=(-670.0, 60.0),
                solid_fraction=(0.15, 0.35), solid_max_mm=3.0, lobulation=0.12,
                spiculated=0.05, bubbles=0.10, vessel_contact=0.45),
    'MIA': dict(kinds=(0.30, 0.62, 0.08), diameter_mm=(7.2, 1.4), glass_hu=(-590.0, 70.0),
                solid_fraction=(0.20, 0.55), solid_max_mm=5.0, lobulation=0.16,
                spiculated=0.20, bubbles=0.20, vessel_contact=0.55),
    'IAC': dict(kinds=(0.06, 0.44, 0.50), diameter_mm=(8.4, 1.3), glass_hu=(-540.0, 70.0),
                solid_fraction=(0.50, 0.90), solid_max_mm=10.0, lobulation=0.22,
                spiculated=0.45, bubbles=0.25, vessel_contact=0.70),
}

_SUBTYPE_CODES = {'AIS': 0x41495301, 'MIA': 0x4D494102, 'IAC': 0x49414303}
_CHUNK = 32           # views rendered together; the output does not depend on it
_STEP = 1.0           # spacing (px) of points along vessel and spicule centre lines
_SAMPLE = 0.5         # spacing (px) of the area samples that paint them
_SUBSTEPS = 2         # area samples along the line per centre-line point
_HARMONICS = 6        # Fourier terms in a nodule outline
_WALL_PROFILE = 64    # cells of a wall's random profiles (across it: striation, fat planes; along it: the
                      # pleura's undulation and irregularity; around its bones: streaks)
_FAR = 1e6            # z half-extent of structures that never leave the slab
_TAU = 2.0 * math.pi

PARENCHYMA_HU = (-860.0, 14.0, -900.0, -820.0)   # mean, sd, clip
TISSUE_HU = (20.0, 50.0)
VESSEL_HU = (20.0, 250.0)      # unenhanced to contrast-enhanced blood
AIR_HU = -1000.0
FAT_HU = (-120.0, -80.0)
MUSCLE_HU = (25.0, 55.0)
MARROW_HU = (200.0, 400.0)
CORTEX_HU = (700.0, 1400.0)    # cortical bone: saturates in the lung window wherever it fills a voxel
STREAK_HU = (15.0, 45.0)       # streaks from dense bone, per 1000 HU of its cortex
NOISE_HU = (28.0, 44.0)        # quantum noise, after filtering
GRAIN_HU = (12.0, 24.0)        # the correlated texture of lung tissue and reconstruction
OPACITY_HU = (150.0, 350.0)    # patchy dependent density

# How often things appear: patches (or walls, or dots) that have one, and (low, high) ranges of counts per patch
# (a field of view of 64 x 0.7 mm), as for RandomState.randint
WALL_SHARE = 0.8               # patches with chest wall or mediastinum
RIB_SHARE = 0.35               # walls with a rib in cross section
VERTEBRA_SHARE = 0.08          # walls with the edge of a vertebral body
SCAPULA_SHARE = 0.06           # walls with a scapula
OPACITY_SHARE = 0.7            # patches with a patchy dependent density
FISSURE_SHARE = 0.2            # patches crossed by a fissure
AIRWAY_SHARE = 0.1             # vessel dots with a small airway beside them
DOTS_PER_PATCH = (4, 15)       # vessels cut across
SEGMENTS_PER_PATCH = (4, 15)   # vessels cut obliquely
TWIGS_PER_PATCH = (15, 41)     # sub-voxel vessels and septa
SPECKS_PER_PATCH = 250         # sub-voxel vessels cut across, in a 44.8 mm field of view
SPECK_OCCUPANCY = 0.35         # the largest fraction of a 0.7 mm voxel they fill


def _smoothstep(t):
    """0 for t <= -1, 1 for t >= 1, a smooth cubic in between (a polynomial, so bit-exact everywhere)."""
    u = t * 0.5
    u += 0.5
    np.maximum(u, 0.0, out=u)
    np.minimum(u, 1.0, out=u)
    out = u * u
    u *= -2.0        # in place, the same roundings as u * u * (3.0 - 2.0 * u)
    u += 3.0
    out *= u
    return out


def _smooth1(t):
    """_smoothstep for one Python float."""
    u = min(max(t * 0.5 + 0.5, 0.0), 1.0)
    return u * u * (3.0 - 2.0 * u)


def _gauss_taps(sigma_px, radius=None):
    if radius is None:
        radius = max(1, int(math.ceil(3.0 * sigma_px)))
    weights = [math.exp(-0.5 * (i / sigma_px) ** 2) for i in range(-radius, radius + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def _blur_valid(images, taps):
    """Separable convolution of [B, H, W] images, dropping the border the kernel cannot fill."""
    n = len(taps)
    height, width = images.shape[1] - n + 1, images.shape[2] - n + 1
    rows = taps[0] * images[:, :, 0:width]
    for i in range(1, n):
        rows += taps[i] * images[:, :, i:i + width]
    out = taps[0] * rows[:, 0:height, :]
    for i in range(1, n):
        out += taps[i] * rows[:, i:i + height, :]
    return out


def _clipped_normal(rs, mean, sd, low, high):
    return min(max(rs.normal(mean, sd), low), high)


class _BSplineNoise(object):
    """Smooth random field: a coarse grid of unit normals upsampled with cubic B-splines (no blur cost)."""

    def __init__(self, size, cell_px):
        u = (np.arange(size, dtype=np.float64) + 0.5) / cell_px
        base = np.floor(u)
        t = (u - base).reshape(size, 1)
        s = 1.0 - t
        self.index = base.astype(np.int64).reshape(size, 1) + np.arange(4).reshape(1, 4)
        self.weight = np.concatenate([s * s * s, (3.0 * t - 6.0) * t * t + 4.0,
                                      ((-3.0 * t + 3.0) * t + 3.0) * t + 1.0, t * t * t], axis=1) / 6.0
        self.grid = int(self.index.max()) + 1
        self.gain = 1.0 / 0.48     # B-spline smoothing leaves unit noise with a variance of ~0.48 in 2-D

    def __call__(self, coarse):
        rows = self.weight[:, 0] * np.take(coarse, self.index[:, 0], axis=2)
        for j in range(1, 4):
            rows += self.weight[:, j] * np.take(coarse, self.index[:, j], axis=2)
        out = self.weight[:, 0].reshape(-1, 1) * np.take(rows, self.index[:, 0], axis=1)
        for i in range(1, 4):
            out += self.weight[:, i].reshape(-1, 1) * np.take(rows, self.index[:, i], axis=1)
        out *= self.gain
        return out


class _Geometry(object):
    """Everything that depends only on resolution and pixel size.

    Patches are rendered on a canvas `border` pixels wider on each side than the patch, which the final
    filtering (point-spread function and kernel sharpening) consumes, so that no edge needs padding.
    """

    def __init__(self, resolution, mm_per_pixel):
        self.size = resolution
        self.mm = 64.0 * mm_per_pixel / resolution      # mm per pixel at this resolution
        self.px = 1.0 / self.mm                         # pixels per mm; the field of view stays 64 * mm_per_pixel
        self.half = resolution / 2.0
        self.psf_taps = _gauss_taps(0.30 * self.px)     # reconstruction point-spread function
        self.border = len(self.psf_taps) // 2 + 1       # + 1 for the 3x3 sharpening
        self.canvas = resolution + 2 * self.border
        centred = np.arange(self.canvas, dtype=np.float64) - (self.canvas - 1) / 2.0
        self.x = centred.reshape(1, 1, self.canvas)     # pixel centres relative to the patch centre
        self.y = centred.reshape(1, self.canvas, 1)
        # a sharp (lung) reconstruction kernel boosts mid frequencies: image + k * (image - its 3x3 mean)
        self.sharpen = 0.25
        kernel = _sharpened_kernel(self.psf_taps, self.sharpen)
        # uniform [0, 1) white noise has variance 1/12: this gain gives the filtered noise unit variance
        self.noise_gain = math.sqrt(12.0 / sum(v * v for row in kernel for v in row))
        self.coarse = _BSplineNoise(self.canvas, 5.0 * self.px)   # slow density variation of the lung
        self.fine = _BSplineNoise(self.canvas, 1.6 * self.px)     # lobular texture, ground-glass mottling
        self.grain = _BSplineNoise(self.canvas, 1.1 * self.px)    # the reconstruction's correlated noise texture
        # sub-voxel vessels and septa cut across: specks per patch and their largest voxel occupancy
        self.specks = int(round(SPECKS_PER_PATCH * (64.0 * mm_per_pixel / 44.8) ** 2))
        self.clustered = int(0.4 * self.specks)
        self.cluster_px = 1.5 * self.px
        self.speck_occupancy = min(1.0, SPECK_OCCUPANCY * 0.49 / (self.mm * self.mm))


def _sharpened_kernel(taps, k):
    """The 2-D kernel (1 + k) * psf - k * (3x3 mean of psf), as nested lists."""
    n = len(taps) + 2
    psf = [[0.0] * n for _ in range(n)]
    for i, a in enumerate(taps):
        for j, b in enumerate(taps):
            psf[i + 1][j + 1] = a * b
    mean = [[sum(psf[i + di][j + dj] for di in (-1, 0, 1) for dj in (-1, 0, 1)
                 if 0 <= i + di < n and 0 <= j + dj < n) / 9.0 for j in range(n)] for i in range(n)]
    return [[(1.0 + k) * psf[i][j] - k * mean[i][j] for j in range(n)] for i in range(n)]


def _scanner(hu, g):
    """Point-spread function, then the kernel's sharpening: [B, canvas, canvas] -> [B, size, size]."""
    x = _blur_valid(hu, g.psf_taps)
    size = g.size
    rows = x[:, :, 0:size] + x[:, :, 1:size + 1] + x[:, :, 2:size + 2]
    mean = (rows[:, 0:size, :] + rows[:, 1:size + 1, :] + rows[:, 2:size + 2, :]) * (1.0 / 9.0)
    return (1.0 + g.sharpen) * x[:, 1:size + 1, 1:size + 1] - g.sharpen * mean


# ----------------------------------------------------------------------------- vessels and spicules

class _Strokes(object):
    """Centre-line points and dots of one nodule's scene, as plain Python lists (branches are short, and
    NumPy's per-call overhead would dominate).

    Line columns: x, y (px from the patch centre), cos, sin (direction), radius (px), weight (0..1), and per
    line: slope x, slope y (px of shift per mm of z), z centre and z half-extent (mm) of visibility.
    Dot columns: x, y, radius, weight, slope x, slope y; holes (air) likewise.
    """

    def __init__(self):
        self.points = tuple([] for _ in range(6))   # x, y, cos, sin, radius, weight of every point
        self.constants = []                          # (count, slope x, slope y, z centre, z half) per line
        self.dots = tuple([] for _ in range(6))
        self.holes = tuple([] for _ in range(6))     # air: lumens of small airways

    def add_dot(self, x, y, radius, weight, slope):
        for column, value in zip(self.dots, (x, y, radius, weight) + tuple(slope)):
            column.append(value)

    def add_airway(self, x, y, lumen, wall, weight, slope):
        """A ring of tissue (a dot with the lumen taken out) around air."""
        self.add_dot(x, y, lumen + wall, weight, slope)
        self.add_dot(x, y, lumen, -weight, slope)
        for column, value in zip(self.holes, (x, y, lumen, weight) + tuple(slope)):
            column.append(value)

    def add_line(self, xs, ys, cs, ss, radii, weights, slope, z_centre=0.0, z_half=_FAR):
        for column, values in zip(self.points, (xs, ys, cs, ss, radii, weights)):
            column.extend(values)
        self.constants.append((len(xs), slope[0], slope[1], z_centre, z_half))

    def arrays(self):
        """Lines [10, n] (x, y, cos, sin, radius, weight, slope x, slope y, z centre, z half), dots [6, m] and
        holes [6, k]."""
        points = np.array(self.points, dtype=np.float64).reshape(6, -1)
        constants = np.array(self.constants, dtype=np.float64).reshape(-1, 5)
        repeated = np.repeat(constants[:, 1:], constants[:, 0].astype(np.int64), axis=0).T
        return (np.concatenate([points, repeated]), np.array(self.dots, dtype=np.float64).reshape(6, -1),
                np.array(self.holes, dtype=np.float64).reshape(6, -1))


def _walk(rs, g, x, y, heading, length_mm, curl):
    """A gently curving path of points _STEP px apart: lists x, y, cos, sin and the final heading.

    curl is the heading's random-walk spread in radians per sqrt(mm), so shapes do not depend on resolution.
    """
    n = max(2, int(length_mm * g.px / _STEP))
    turns = (rs.normal(0.0, curl * math.sqrt(_STEP / g.px), n)).tolist()
    headings = list(accumulate([heading] + turns))[1:]
    cs = list(map(math.cos, headings))    # math, not np.cos: see the module docstring
    ss = list(map(math.sin, headings))
    xs = list(accumulate([x] + [_STEP * c for c in cs]))[1:]
    ys = list(accumulate([y] + [_STEP * s for s in ss]))[1:]
    return xs, ys, cs, ss, headings[-1]


def _grow_tree(rs, g, strokes, x, y, heading, radius, budget, slope):
    """Pulmonary vessels: tapering segments that fork into a thicker and a thinner daughter."""
    limit = 1.5 * g.half    # far enough outside the field of view that nothing there is visible
    min_radius = 0.15 * g.px
    stack = [(x, y, heading, radius, 0, rs.uniform(0.8, 1.0))]
    while stack:
        x, y, heading, radius, depth, weight = stack.pop()
        # the trunk crosses into the field before it may branch or leave the slice
        length = rs.uniform(14.0, 24.0) if depth == 0 else rs.uniform(4.0, 10.0)
        xs, ys, cs, ss, heading = _walk(rs, g, x, y, heading, length, 0.12)
        n = len(xs)
        taper = radius * rs.uniform(0.25, 0.45) / n
        radii = [radius - taper * (i + 1) for i in range(n)]
        weights = [weight] * n
        left = abs(xs[-1]) >= limit or abs(ys[-1]) >= limit
        # most branches dive out of the slice instead of forking: a slice shows a few vessels, not a tree
        forks = (not left and depth < 3 and radii[-1] > min_radius and budget[0] >= 2
                 and rs.uniform() < (0.85 if depth == 0 else 0.45))
        if not forks and not left:
            # a vessel ending inside the patch is leaving the slice: it thins to a sub-voxel, grey tip
            fades = [_smooth1(2.0 - 3.0 * i / (n - 1)) for i in range(n)]
            weights = [weight * (0.3 + 0.7 * f) for f in fades]
            radii = [r * (0.15 + 0.85 * f) for r, f in zip(radii, fades)]
        strokes.add_line(xs, ys, cs, ss, radii, weights, slope)
        if not forks:
            continue
        side = 1.0 if rs.uniform() < 0.5 else -1.0
        if rs.uniform() < 0.7:
            children = [(side * rs.uniform(0.08, 0.35), rs.uniform(0.75, 0.9)),
                        (-side * rs.uniform(0.45, 1.0), rs.uniform(0.45, 0.7))]
        else:
            children = [(rs.normal(0.0, 0.1), rs.uniform(0.85, 0.95))]
        for turn, shrink in children:
            if radii[-1] * shrink > min_radius:
                budget[0] -= 1
                stack.append((xs[-1], ys[-1], heading + turn, radii[-1] * shrink, depth + 1,
                              weight * rs.uniform(0.5, 0.9)))


def _draw_vessels(rs, g, strokes, nodule_xy, contact):
    """Vessel trees entering from the edge; if `contact`, the first one is aimed at the nodule."""
    budget = [6]      # branches per nodule: a slice shows pieces of vessels, not whole trees
    for tree in range(rs.randint(1, 3)):
        entry = rs.uniform(0.0, _TAU)
        # start just outside the square field of view, so that trunks enter from the edge
        distance = g.half * rs.uniform(1.05, 1.3) / max(abs(math.cos(entry)), abs(math.sin(entry)))
        x, y = distance * math.cos(entry), distance * math.sin(entry)
        if tree == 0 and contact:
            aim = math.atan2(nodule_xy[1] - y, nodule_xy[0] - x) + rs.normal(0.0, 0.05)
        else:
            # other trees pass beside the centre (they may still brush the nodule, as in the lung)
            aim = entry + math.pi + (1.0 if rs.uniform() < 0.5 else -1.0) * rs.uniform(0.3, 0.8)
        slope = (rs.uniform(-0.7, 0.7) * g.px, rs.uniform(-0.7, 0.7) * g.px)   # oblique course through the slab
        _grow_tree(rs, g, strokes, x, y, aim, rs.uniform(0.3, 1.1) * g.px, budget, slope)
    # vessels running obliquely through the slice: short segments of any calibre, in the slab for a few mm
    for _ in range(rs.randint(*SEGMENTS_PER_PATCH)):
        xs, ys, cs, ss, _ = _walk(rs, g, rs.uniform(-1.0, 1.0) * g.half, rs.uniform(-1.0, 1.0) * g.half,
                                  rs.uniform(0.0, _TAU), rs.uniform(1.0, 5.0), 0.3)
        n, radius, weight = len(xs), _calibre(rs) * g.px, rs.uniform(0.5, 1.0)
        # thickest and densest where the vessel crosses the middle of the slab
        fades = [_smooth1(1.5 - 3.0 * abs(2.0 * i / (n - 1) - 1.0)) for i in range(n)]
        strokes.add_line(xs, ys, cs, ss, [radius * (0.4 + 0.6 * f) for f in fades], [weight * f for f in fades],
                         (0.0, 0.0), rs.uniform(-3.0, 3.0), rs.uniform(1.0, 3.0))
    # twigs: the many small vessels and interlobular septa a slice catches for a millimetre or so, thinner than a
    # voxel, so partial-volume grey
    for _ in range(rs.randint(*TWIGS_PER_PATCH)):
        xs, ys, cs, ss, _ = _walk(rs, g, rs.uniform(-1.0, 1.0) * g.half, rs.uniform(-1.0, 1.0) * g.half,
                                  rs.uniform(0.0, _TAU), rs.uniform(1.0, 4.0), 0.4)
        n = len(xs)
        strokes.add_line(xs, ys, cs, ss, [rs.uniform(0.12, 0.35) * g.px] * n, [rs.uniform(0.5, 1.0)] * n,
                         (0.0, 0.0), rs.uniform(-3.0, 3.0), rs.uniform(1.0, 3.0))
    # vessels running across the slice: round dots of every calibre, the largest nearly blood-dense
    for _ in range(rs.randint(*DOTS_PER_PATCH)):
        x, y = rs.uniform(-1.0, 1.0) * g.half, rs.uniform(-1.0, 1.0) * g.half
        radius, weight = _calibre(rs), rs.uniform(0.5, 1.0)
        slope = (rs.uniform(-0.3, 0.3) * g.px, rs.uniform(-0.3, 0.3) * g.px)
        strokes.add_dot(x, y, radius * g.px, weight, slope)
        if rs.uniform() < AIRWAY_SHARE:
            # a small airway beside its artery: a thin wall around an air lumen
            lumen = rs.uniform(0.5, 1.0) * (radius + 0.5)
            wall = rs.uniform(0.4, 0.7) + 0.15 * lumen
            angle = rs.uniform(0.0, _TAU)
            reach = (radius + lumen + wall) * g.px
            strokes.add_airway(x + reach * math.cos(angle), y + reach * math.sin(angle), lumen * g.px,
                               wall * g.px, rs.uniform(0.3, 0.6), slope)
    if rs.uniform() < FISSURE_SHARE:
        # an interlobar fissure: a faint hairline across the field
        entry = rs.uniform(0.0, _TAU)
        distance = g.half * 1.45 / max(abs(math.cos(entry)), abs(math.sin(entry)))
        offset = rs.uniform(-0.8, 0.8) * g.half
        x = distance * math.cos(entry) - offset * math.sin(entry)
        y = distance * math.sin(entry) + offset * math.cos(entry)
        xs, ys, cs, ss, _ = _walk(rs, g, x, y, entry + math.pi + rs.normal(0.0, 0.15),
                                  2.9 * g.half * g.mm, 0.04)
        n = len(xs)
        strokes.add_line(xs, ys, cs, ss, [rs.uniform(0.15, 0.3) * g.px] * n, [rs.uniform(0.4, 0.8)] * n,
                         (rs.uniform(-0.5, 0.5) * g.px, rs.uniform(-0.5, 0.5) * g.px))


def _draw_vessels_through(rs, g, strokes, glass):
    """Ground glass fills air spaces around the vessels in it: small vessels cross it as dots and short
    segments, which show through the haze."""
    for _ in range(rs.randint(0, 4)):
        angle, reach = rs.uniform(0.0, _TAU), rs.uniform(0.0, 0.8) * glass.radius
        x, y = glass.x + reach * math.cos(angle), glass.y + reach * math.sin(angle)
        radius, weight = rs.uniform(0.2, 0.6) * g.px, rs.uniform(0.5, 1.0)
        if rs.uniform() < 0.5:
            strokes.add_dot(x, y, radius, weight, (0.0, 0.0))
            continue
        xs, ys, cs, ss, _ = _walk(rs, g, x, y, rs.uniform(0.0, _TAU), rs.uniform(1.5, 4.0), 0.3)
        n = len(xs)
        strokes.add_line(xs, ys, cs, ss, [radius] * n, [weight] * n, (0.0, 0.0),
                         rs.uniform(-0.8, 0.8) * glass.z_half, rs.uniform(1.0, 3.0))


def _calibre(rs):
    """Radius (mm) of a vessel cut by the slice: small ones far more common than large ones (0.2-2 mm)."""
    u = rs.uniform()
    u *= u
    return 0.2 + 1.8 * u * u


def _line_samples(b, x, y, cos_h, sin_h, radius, weight):
    """Area samples of centre-line points (see _area_samples), _SUBSTEPS rows of samples across each point."""
    k = int(math.ceil(float(radius.max()) / _SAMPLE - 0.5))
    across = np.arange(-k, k + 1) * _SAMPLE
    # exact 1-D overlap of each sample's cell with the vessel's cross-section, so thin vessels keep their area
    cover = np.maximum(np.minimum(across + 0.5 * _SAMPLE, radius[:, None])
                       - np.maximum(across - 0.5 * _SAMPLE, -radius[:, None]), 0.0)
    area = cover * (weight * (_STEP / _SUBSTEPS))[:, None]
    parts = []
    for j in range(_SUBSTEPS):
        # fill in between centre-line points, which are _STEP apart
        back = j * _STEP / _SUBSTEPS
        parts.append((np.broadcast_to(b[:, None], cover.shape),
                      (x - back * cos_h)[:, None] - sin_h[:, None] * across,
                      (y - back * sin_h)[:, None] + cos_h[:, None] * across, area))
    return parts


def _dot_samples(b, x, y, radius, weight):
    """Area samples of round dots (see _area_samples), on a square grid of samples around each."""
    b, x, y, radius, weight = [v.reshape(-1, 1, 1) for v in (b, x, y, radius, weight)]
    k = int(math.ceil(float(radius.max()) / _SAMPLE))
    offset = np.arange(-k, k + 1) * _SAMPLE
    dx, dy = offset.reshape(1, 1, -1), offset.reshape(1, -1, 1)
    cover = np.minimum(np.maximum((radius - np.sqrt(dx * dx + dy * dy)) / _SAMPLE + 0.5, 0.0), 1.0)
    return (np.broadcast_to(b, cover.shape), x + dx + 0.0 * dy, y + dy + 0.0 * dx,
            cover * (weight * _SAMPLE * _SAMPLE))


def _area_samples(lines, dots):
    """Expand centre lines [7, n] (patch, x, y, cos, sin, radius, weight) and dots [5, m] (patch, x, y, radius,
    weight) into (patch, x, y, area) samples on a _SAMPLE grid."""
    parts = []
    if lines.shape[1]:
        # most vessels are thinner than a pixel: expand them over few samples, the thick ones over more
        thin = lines[5] <= 2.0 * _SAMPLE - 0.5 * _SAMPLE
        for group in (lines[:, thin], lines[:, ~thin]):
            if group.shape[1]:
                parts.extend(_line_samples(*group))
    # most dots are small: a small grid of samples for them, a larger one for the few large ones
    small = dots[3] <= 4.0 * _SAMPLE
    for group in (dots[:, small], dots[:, ~small]):
        if group.shape[1]:
            parts.append(_dot_samples(*group))
    keep = [part[3] != 0.0 for part in parts]   # holes taken out of dots have negative weights
    return [np.concatenate([part[i][ok] for part, ok in zip(parts, keep)] + [np.zeros(0)]) for i in range(4)]


def _paint(lines, dots, specks, count, g):
    """Occupancy [B, canvas, canvas] of vessels (bilinear splat of their area samples) and specks (points
    (patch, x, y, occupancy), splatted the same way).  np.bincount adds in order."""
    side = g.canvas + 2     # a spare pixel on each side takes the splat's overhang, so no corner needs a check
    b, x, y, w = _area_samples(lines, dots)
    if specks is not None:
        b, x, y, w = [np.concatenate([a, s]) for a, s in zip((b, x, y, w), specks)]
    x, y = x + (g.canvas + 1) / 2.0, y + (g.canvas + 1) / 2.0
    # samples beyond the canvas (branches running outside the field of view) cannot affect it
    near = (x >= 0.0) & (x < side - 1.0) & (y >= 0.0) & (y < side - 1.0)
    b, x, y, w = b[near].astype(np.int64), x[near], y[near], w[near]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    corner = (b * side + y0.astype(np.int64)) * side + x0.astype(np.int64)
    index = np.concatenate([corner, corner + 1, corner + side, corner + (side + 1)])
    gx, gy = 1.0 - fx, 1.0 - fy
    value = np.concatenate([w * gx * gy, w * fx * gy, w * gx * fy, w * fx * fy])
    canvas = np.bincount(index, value, minlength=count * side * side).reshape(count, side, side)
    return np.minimum(np.maximum(canvas[:, 1:-1, 1:-1], 0.0), 1.0)


# ----------------------------------------------------------------------------- nodule

def _harmonics(rs, amplitudes):
    """Random Fourier coefficients a_1..a_6, b_1..b_6 of an outline, amplitude k drawn up to amplitudes[k]."""
    u = rs.random_sample((2, _HARMONICS)).tolist()
    amplitude = [v * (amplitudes[k] if k < len(amplitudes) else 0.0) for k, v in enumerate(u[0])]
    phase = [v * _TAU for v in u[1]]
    return ([r * math.cos(t) for r, t in zip(amplitude, phase)]
            + [r * math.sin(t) for r, t in zip(amplitude, phase)])


class _Body(object):
    """One ellipsoidal component of a nodule (ground glass, solid core or bubble), lengths in px and mm.

    centre: (x, y) px from the patch centre and z mm; radius: in-plane semi-axis (px); z_half: semi-axis along z
    (mm); edge: width of the soft margin (px); density: fraction of tissue filling it; mottle: heterogeneity;
    roughness: how far (as a fraction of the radius) the lung's fine texture pushes the margin in and out, so
    that it is irregular;
    low, high: outline harmonics at the bottom and top of the body (interpolated in between).
    """

    def __init__(self, x, y, z, radius, z_half, edge, density, mottle, low, high, roughness=0.0):
        self.x, self.y, self.z, self.radius, self.z_half = x, y, z, radius, z_half
        self.edge, self.density, self.mottle, self.low, self.high = edge, density, mottle, low, high
        self.roughness = roughness

    def section(self, z, turn, shift):
        """Blob parameters [x, y, R, edge, density, mottle, roughness, a_1..a_6, b_1..b_6] of the cut at z (mm), rotated by
        turn = (cos, sin, angle) and shifted by (dx, dy) px; None if the slice misses the body."""
        u = (z - self.z) / self.z_half
        if u * u >= 1.0:
            return None
        radius = self.radius * math.sqrt(1.0 - u * u)
        t = 0.5 + 0.5 * u
        c, s, angle = turn
        coefficients = [lo + (hi - lo) * t for lo, hi in zip(self.low, self.high)]
        a, b = coefficients[:_HARMONICS], coefficients[_HARMONICS:]
        rotated_a, rotated_b = [], []
        for k in range(_HARMONICS):
            ck, sk = math.cos((k + 1) * angle), math.sin((k + 1) * angle)
            rotated_a.append(a[k] * ck - b[k] * sk)
            rotated_b.append(a[k] * sk + b[k] * ck)
        return ([c * self.x - s * self.y + shift[0], s * self.x + c * self.y + shift[1], radius, self.edge,
                 self.density, self.mottle, self.roughness * radius] + rotated_a + rotated_b)


def _draw_nodule(rs, model, g, parenchyma_hu, tissue_hu, strokes):
    """The 3-D nodule: (ground glass or None, solid core or None, bubbles, description)."""
    u = rs.uniform()
    kind = 0 if u < model['kinds'][0] else 1 if u < model['kinds'][0] + model['kinds'][1] else 2
    diameter = _clipped_normal(rs, model['diameter_mm'][0], model['diameter_mm'][1], 4.0, 10.0)
    glass_hu = _clipped_normal(rs, model['glass_hu'][0], model['glass_hu'][1], -750.0, -300.0)
    lobulation = rs.uniform(0.4, 1.0) * model['lobulation']
    radius = 0.5 * diameter
    z_half = radius * rs.uniform(0.8, 1.15)
    jitter = 1.4     # mm: the nodule sits near, not exactly at, the centre
    x, y = rs.uniform(-jitter, jitter) * g.px, rs.uniform(-jitter, jitter) * g.px
    shape = [0.04, lobulation, 0.8 * lobulation, 0.5 * lobulation, 0.3 * lobulation, 0.03]
    solid_mm = 0.0
    glass = solid = None
    if kind < 2:
        density = min(max((glass_hu - parenchyma_hu) / (tissue_hu - parenchyma_hu), 0.02), 0.9)
        # ground glass: a faint, patchy haze with a hazy margin 1.2-3 mm wide, irregular in outline (more than
        # a solid nodule) and at the scale of secondary lobules
        hazy = [1.5 * a for a in shape]
        glass = _Body(x, y, 0.0, radius * g.px, z_half, rs.uniform(1.2, 3.0) * g.px, density,
                      rs.uniform(0.3, 0.6), _harmonics(rs, hazy), _harmonics(rs, hazy), rs.uniform(0.15, 0.3))
    if kind == 1:
        low, high = model['solid_fraction']
        solid_mm = min(diameter * rs.uniform(low, high), model['solid_max_mm'])
        core = 0.5 * solid_mm
        reach, angle = rs.uniform(0.0, 0.5) * (radius - core), rs.uniform(0.0, _TAU)
        solid = _Body(x + reach * math.cos(angle) * g.px, y + reach * math.sin(angle) * g.px,
                      rs.uniform(-0.3, 0.3) * (z_half - core), core * g.px, core * rs.uniform(0.8, 1.15),
                      rs.uniform(0.35, 0.6) * g.px, 1.0, 0.15, _harmonics(rs, shape), _harmonics(rs, shape),
                      rs.uniform(0.04, 0.1))
    elif kind == 2:
        solid_mm = diameter
        # solid: a slightly irregular, blurred margin
        solid = _Body(x, y, 0.0, radius * g.px, z_half, rs.uniform(0.35, 0.6) * g.px, 1.0, 0.15,
                      _harmonics(rs, shape), _harmonics(rs, shape), rs.uniform(0.04, 0.1))
    spiculated = rs.uniform() < model['spiculated']
    if spiculated:
        # spicules: thin strands of fibrosis radiating from the margin, each in and out of a few slices
        body = solid if solid is not None else glass
        for _ in range(rs.randint(4, 12)):
            angle = rs.uniform(0.0, _TAU)
            start = 0.85 * body.radius
            length = rs.uniform(3.0, 8.0) if rs.uniform() < 0.4 else rs.uniform(1.5, 3.5)
            xs, ys, cs, ss, _ = _walk(rs, g, body.x + start * math.cos(angle), body.y + start * math.sin(angle),
                                      angle + rs.normal(0.0, 0.25), length, 0.12)
            n, root, tip = len(xs), rs.uniform(0.15, 0.35) * g.px, 0.06 * g.px
            radii = [root + (tip - root) * i / (n - 1) for i in range(n)]
            strokes.add_line(xs, ys, cs, ss, radii, [rs.uniform(0.5, 1.0)] * n, (0.0, 0.0),
                             rs.uniform(-0.6, 0.6) * body.z_half, rs.uniform(0.8, 2.0))
    bubbles = []
    if rs.uniform() < model['bubbles']:
        # bubble-like lucency / air bronchogram inside the nodule
        for _ in range(rs.randint(1, 3)):
            angle, reach = rs.uniform(0.0, _TAU), rs.uniform(0.0, 0.5) * radius
            size = rs.uniform(0.5, 1.0)
            bubbles.append(_Body(x + reach * math.cos(angle) * g.px, y + reach * math.sin(angle) * g.px,
                                 rs.uniform(-0.4, 0.4) * z_half, size * g.px, size, 0.2 * g.px, 1.0, 0.0,
                                 [0.0] * (2 * _HARMONICS), [0.0] * (2 * _HARMONICS)))
    description = dict(kind=kind, diameter_mm=diameter, solid_mm=solid_mm, glass_hu=glass_hu if kind < 2 else None,
                       lobulation=lobulation, spiculated=spiculated, bubbles=len(bubbles), z_half_mm=z_half)
    return glass, solid, bubbles, description


def _render_blobs(blobs, mottle, g):
    """Occupancy [B, H, W] (density-weighted, clipped to 0..1) and inside [B, H, W] (the outline, 0..1) of one
    blob per view (None: no blob), computed on the central window that can hold them."""
    fill_out = np.zeros((len(blobs), g.canvas, g.canvas))
    inside_out = np.zeros((len(blobs), g.canvas, g.canvas))
    chosen = [i for i, blob in enumerate(blobs) if blob is not None]
    if not chosen:
        return fill_out, inside_out
    p = np.array([blobs[i] for i in chosen], dtype=np.float64).T.reshape(-1, len(chosen), 1, 1)
    a, b = p[7:7 + _HARMONICS], p[7 + _HARMONICS:]
    # the smoothstep is 0 beyond R * (1 + sum |harmonics|) + edge (+ the margin's roughness times the texture,
    # which stays within 5), so nothing outside the window changes
    reach = (np.maximum(np.abs(p[0]), np.abs(p[1])) + p[2] * (1.0 + np.sqrt(a * a + b * b).sum(axis=0))
             + p[3] + 5.0 * p[6])
    lo = min(max(0, int(math.floor(g.canvas / 2.0 - float(reach.max()))) - 1), g.canvas // 2 - 1)
    hi = g.canvas - lo
    dx, dy = g.x[:, :, lo:hi] - p[0], g.y[:, lo:hi, :] - p[1]
    rho = np.sqrt(dx * dx + dy * dy)
    inv = 1.0 / np.maximum(rho, 1e-9)
    c1, s1 = dx * inv, dy * inv
    ck, sk = c1, s1
    shape = 1.0
    for k in range(_HARMONICS):
        if k:
            # cos/sin of (k+1) * angle by angle addition: exact arithmetic instead of per-pixel trig
            ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
        shape = shape + a[k] * ck + b[k] * sk
    texture = mottle[chosen][:, lo:hi, lo:hi]
    # the texture pushes the margin in and out, but never eats the nodule away (texture >= -1.2)
    inside = _smoothstep((p[2] * shape - rho + p[6] * np.maximum(texture, -1.2)) / p[3])
    fill = p[4] * inside * (1.0 + p[5] * texture)
    fill_out[chosen, lo:hi, lo:hi] = np.minimum(np.maximum(fill, 0.0), 1.0)
    inside_out[chosen, lo:hi, lo:hi] = inside
    return fill_out, inside_out


# ----------------------------------------------------------------------------- chest wall

_WALL_FIELDS = ('ux', 'uy', 'distance', 'arc_radius', 'bulge', 'edge', 'wobble', 'ripple', 'skirt', 'skirt_hu',
                'fat_depth', 'fat_hu', 'muscle_hu', 'fat_level', 'origin_x', 'origin_y')
# a bone in the wall: an oval centred `depth` px behind the pleura at `along` px beside the wall's axis, with a
# dense cortex `cortex` px thick around marrow (a plate thinner than twice its cortex is cortex throughout)
_BONE_FIELDS = ('depth', 'along', 'half_depth', 'half_length', 'cortex', 'cortex_hu', 'marrow_hu', 'streak_hu')


def _draw_bones(rs, g, floor_mm):
    """Bones of one wall as dicts of _BONE_FIELDS (px and HU), deeper than floor_mm behind the pleura: a rib in
    cross section in many walls, now and then the edge of a vertebral body or a scapula."""
    bones = []

    def bone(depth_mm, along_mm, half_depth_mm, half_length_mm, cortex_mm, cortex_hu, marrow_hu):
        # dense bone scatters and starves the projections through it: streaks fan out from it
        bones.append(dict(depth=(floor_mm + half_depth_mm + depth_mm) * g.px, along=along_mm * g.px,
                          half_depth=half_depth_mm * g.px, half_length=half_length_mm * g.px,
                          cortex=cortex_mm * g.px, cortex_hu=cortex_hu, marrow_hu=marrow_hu,
                          streak_hu=rs.uniform(*STREAK_HU) * (cortex_hu / 1000.0)))
    if rs.uniform() < RIB_SHARE:
        bone(rs.uniform(0.5, 5.0), rs.uniform(-14.0, 14.0), rs.uniform(3.0, 5.0), rs.uniform(5.0, 11.0),
             rs.uniform(0.8, 1.8), rs.uniform(*CORTEX_HU), rs.uniform(*MARROW_HU))
    u = rs.uniform()
    if u < VERTEBRA_SHARE:
        bone(rs.uniform(3.0, 10.0), rs.uniform(-16.0, 16.0), rs.uniform(9.0, 14.0), rs.uniform(12.0, 18.0),
             rs.uniform(1.0, 2.0), rs.uniform(*CORTEX_HU), rs.uniform(150.0, 300.0))
    elif u < VERTEBRA_SHARE + SCAPULA_SHARE:
        half_depth = rs.uniform(0.8, 2.0)
        bone(rs.uniform(6.0, 16.0), rs.uniform(-10.0, 10.0), half_depth, rs.uniform(20.0, 40.0), half_depth,
             rs.uniform(*CORTEX_HU), rs.uniform(*MARROW_HU))
    return bones


def _draw_wall(rs, g, nodule_radius_mm):
    """A pleura / chest-wall (or mediastinum) region entering from one side: (dict of _WALL_FIELDS, lengths in
    px; list of bones, dicts of _BONE_FIELDS; slope in px per mm of z; random profiles [5, _WALL_PROFILE]), or
    None."""
    if rs.uniform() >= WALL_SHARE:
        return None
    side = rs.uniform(0.0, _TAU)
    bulge = -1.0 if rs.uniform() < 0.25 else 1.0   # -1: wall bulging into the lung (e.g. diaphragm, mediastinum)
    nearest = nodule_radius_mm + 4.0                # the nodule stays in the lung, clear of the pleura's wobble
    wall = dict(ux=math.cos(side), uy=math.sin(side), distance=rs.uniform(max(nearest, 9.0), 25.0) * g.px,
                arc_radius=rs.uniform(40.0, 200.0) * g.px, bulge=bulge,
                # the pleura is crisp where the slab cuts it squarely, smeared a little where obliquely
                edge=(rs.uniform(0.2, 0.45) if rs.uniform() < 0.85 else rs.uniform(0.45, 1.2)) * g.px,
                # it is no perfect arc: it undulates over several mm (intercostal spaces, muscle bundles,
                # pleural thickening) and is finely irregular
                wobble=rs.uniform(0.6, 2.5) * g.px, ripple=rs.uniform(0.2, 0.6) * g.px,
                # in some walls a thin band of denser (dependent) subpleural lung, patchy, a millimetre or two
                skirt=rs.uniform(0.6, 2.0) * g.px, skirt_hu=rs.uniform(60.0, 300.0) if rs.uniform() < 0.3 else 0.0,
                fat_depth=rs.uniform(0.3, 4.0) * g.px, fat_hu=rs.uniform(*FAT_HU), muscle_hu=rs.uniform(*MUSCLE_HU),
                fat_level=rs.uniform(-0.5, 1.5),        # more or less fat between the muscle bundles
                origin_x=0.0, origin_y=0.0)
    # bones lie in the chest wall, below the extrapleural fat and clear of the pleura's undulation
    bones = _draw_bones(rs, g, wall['fat_depth'] * g.mm + 1.2 * wall['wobble'] * g.mm)
    # muscle striation and fat planes run parallel to the pleura: random profiles across the wall's depth; the
    # pleura's undulation and irregularity: random profiles along it; the streaks of its bones: one around them
    profiles = rs.standard_normal((5, _WALL_PROFILE))
    return wall, bones, rs.uniform(-0.3, 0.3) * g.px, profiles


def _profile(values, t):
    """Cubic B-spline curve through periodic random values [B, n], sampled at t [B, ...] (in cells): a smooth
    1-D random profile of roughly unit variance."""
    n = values.shape[1]
    base = np.floor(t)
    u = t - base
    s = 1.0 - u
    weights = (s * s * s, (3.0 * u - 6.0) * u * u + 4.0, ((-3.0 * u + 3.0) * u + 3.0) * u + 1.0, u * u * u)
    # the values wrapped around by one cell before and two after, so that one modulo serves all four taps
    padded = np.concatenate([values[:, -1:], values, values[:, :2]], axis=1)
    index = base.astype(np.int64) % n + (np.arange(len(values)) * (n + 3)).reshape((-1,) + (1,) * (t.ndim - 1))
    flat = padded.reshape(-1)
    out = weights[0] * flat[index]
    for k in range(1, 4):
        index += 1
        out += weights[k] * flat[index]
    out *= 1.0 / (6.0 * 0.69)   # 0.69: the standard deviation the cubic B-spline leaves in 1-D
    return out


def _wall_layers(profiles, p, g):
    """HU of each wall's layers against depth (px, on a grid `step` apart starting at `first`): extrapleural fat,
    then muscle striated across its bundles (0.6 mm) with fat planes between them (2.5 mm)."""
    step = 0.25
    first = -(2.0 * g.canvas + 10.0 * g.px)
    depth = first + step * np.arange(int(-2.0 * first / step) + 2, dtype=np.float64).reshape(1, -1)
    fat_depth, fat_level = p['fat_depth'].reshape(-1, 1), p['fat_level'].reshape(-1, 1)
    muscle, fat_hu = p['muscle_hu'].reshape(-1, 1), p['fat_hu'].reshape(-1, 1)
    striation = _profile(profiles[:, 0], depth * (1.0 / (0.6 * g.px)))
    planes = _profile(profiles[:, 1], depth * (1.0 / (2.5 * g.px)))
    fat = np.maximum(_smoothstep((fat_depth - depth) / (0.6 * g.px)), _smoothstep((planes - fat_level) * 2.0))
    return muscle + (fat_hu - muscle) * fat + 14.0 * striation, first, step


def _pseudo_angle(dx, dy):
    """A monotonic stand-in for the angle of (dx, dy), in [0, 4) for a full turn: exact arithmetic, no atan2."""
    ax, ay = np.abs(dx), np.abs(dy)
    t = dy / np.maximum(ax + ay, 1e-9)          # -1..1, the sine-like part
    return np.where(dx >= 0.0, np.where(dy >= 0.0, t, 4.0 + t), 2.0 - t)


def _render_bones(bones, rays, depth, along, mottle, hu, g):
    """Paint the bones into the walls' HU [B, H, W] (in place) and return the streaks they cast [B, H, W].

    bones: for each wall its list of bones (dicts of _BONE_FIELDS); rays: random profiles [B, n] of the streaks
    around them."""
    streaks = np.zeros(hu.shape)
    for k in range(max(len(wall_bones) for wall_bones in bones)):
        chosen = [i for i, wall_bones in enumerate(bones) if len(wall_bones) > k]
        q = dict(zip(_BONE_FIELDS, np.array([[bones[i][k][name] for name in _BONE_FIELDS] for i in chosen],
                                            dtype=np.float64).T.reshape(-1, len(chosen), 1, 1)))
        d, a = depth[chosen] - q['depth'], along[chosen] - q['along']
        half_b, half_a, cortex = q['half_depth'], q['half_length'], q['cortex']
        sharp = 1.0 / (0.25 * g.px)      # a crisp outline: bone edges are the sharpest in the image
        # no perfect ovals: the lung's texture makes the outline and the cortex's thickness irregular
        rough = 0.3 * g.px * mottle[chosen]
        e1, e2 = d / half_b, a / half_a
        outer = _smoothstep(((1.0 - np.sqrt(e1 * e1 + e2 * e2)) * half_b + rough) * sharp)
        inner_b, inner_a = np.maximum(half_b - cortex, 1e-3), np.maximum(half_a - cortex, 1e-3)
        e1, e2 = d / inner_b, a / inner_a
        inner = _smoothstep(((1.0 - np.sqrt(e1 * e1 + e2 * e2)) * inner_b - rough) * sharp) * (half_b > cortex)
        bone = hu[chosen]
        # marrow: trabecular bone in fat, grey and mottled
        marrow = q['marrow_hu'] + 40.0 * mottle[chosen]
        hu[chosen] = bone + (q['cortex_hu'] - bone) * outer + (marrow - q['cortex_hu']) * inner
        # streaks: bright and dark rays fanning out from the bone, fading with distance from it
        distance = np.sqrt(d * d + a * a)
        reach = half_b + half_a
        streaks[chosen] += (q['streak_hu'] * reach / (reach + distance)) * _profile(
            rays[chosen], _pseudo_angle(a, d) * (rays.shape[1] / 4.0))
    return streaks


def _render_wall(walls, profiles, bones, texture, mottle, g):
    """Returns (occupancy of the wall, HU inside the wall, HU added to the lung next to it, streaks from its
    bones), all [B, H, W]."""
    p = dict(zip(_WALL_FIELDS, np.array([[wall[name] for name in _WALL_FIELDS] for wall in walls],
                                        dtype=np.float64).T.reshape(-1, len(walls), 1, 1)))
    ux, uy, bulge, radius = p['ux'], p['uy'], p['bulge'], p['arc_radius']
    dx = g.x - (p['origin_x'] + (p['distance'] - bulge * radius) * ux)
    dy = g.y - (p['origin_y'] + (p['distance'] - bulge * radius) * uy)
    depth = bulge * (np.sqrt(dx * dx + dy * dy) - radius)       # px into the wall, were it a perfect arc
    along = (g.x - p['origin_x']) * (-uy) + (g.y - p['origin_y']) * ux
    # the pleura undulates (6 mm cells) and is finely irregular (1.2 mm cells and the lung's mottle)
    pleura = (depth + p['wobble'] * _profile(profiles[:, 2], along * (1.0 / (6.0 * g.px)))
              + p['ripple'] * (_profile(profiles[:, 3], along * (1.0 / (1.2 * g.px))) + 0.7 * mottle))
    occupancy = _smoothstep(pleura / p['edge'])
    skirt = p['skirt_hu'] * _smoothstep(pleura / p['skirt'] + 1.0) * np.maximum(1.0 + 0.8 * mottle, 0.0)
    # layers parallel to the pleura, gently wavy: a 1-D table of HU against depth, looked up at the nearest
    # entry (a quarter pixel apart, finer than the point-spread function can show)
    table, first, step = _wall_layers(profiles, p, g)
    position = (pleura + (1.2 * g.px) * texture) * (1.0 / step) + (0.5 - first / step)
    index = np.minimum(np.maximum(position, 0.0), table.shape[1] - 1.0).astype(np.int64)
    index += (np.arange(len(walls)) * table.shape[1]).reshape(-1, 1, 1)
    hu = table.reshape(-1)[index] + 8.0 * texture + 8.0 * mottle
    # parietal pleura / endothoracic fascia: a thin line denser than the fat beneath it
    line = np.maximum(1.0 - np.abs(pleura - 0.4 * g.px) / (0.45 * g.px), 0.0)
    hu = hu + (p['muscle_hu'] - hu) * line
    streaks = np.zeros(hu.shape)
    boned = [i for i, wall_bones in enumerate(bones) if wall_bones]
    if boned:
        inside = hu[boned]
        streaks[boned] = _render_bones([bones[i] for i in boned], profiles[boned, 4], depth[boned], along[boned],
                                       mottle[boned], inside, g)
        hu[boned] = inside
    return occupancy, hu, skirt, streaks


# ----------------------------------------------------------------------------- scenes and views

class _Scene(object):
    """All random choices for one 3-D nodule and its surroundings, in a fixed order."""

    def __init__(self, rs, subtype, g):
        model = SUBTYPE_MODELS[subtype]
        self.parenchyma_hu = _clipped_normal(rs, *PARENCHYMA_HU)
        gradient = rs.uniform(0.0, _TAU)
        self.gradient = (math.cos(gradient), math.sin(gradient), rs.uniform(0.0, 90.0))  # HU across the field
        self.coarse_hu = rs.uniform(10.0, 22.0)
        self.fine_hu = rs.uniform(4.0, 9.0)
        self.tissue_hu = rs.uniform(*TISSUE_HU)
        self.vessel_hu = rs.uniform(*VESSEL_HU) if rs.uniform() < 0.5 else rs.uniform(*TISSUE_HU)
        self.noise_hu = rs.uniform(*NOISE_HU)
        # two independent texture fields per scale; slices mix them, so texture drifts from slice to slice
        self.coarse = rs.standard_normal((2, g.coarse.grid, g.coarse.grid))
        self.fine = rs.standard_normal((2, g.fine.grid, g.fine.grid))
        self.texture_mm = rs.uniform(4.0, 8.0)     # z distance over which the texture changes completely
        strokes = _Strokes()
        self.glass, self.solid, self.bubbles, self.description = _draw_nodule(
            rs, model, g, self.parenchyma_hu, self.tissue_hu, strokes)
        body = self.solid if self.glass is None else self.glass
        contact = rs.uniform() < model['vessel_contact']
        self.description['vessel_contact'] = contact
        _draw_vessels(rs, g, strokes, (body.x, body.y), contact)
        if self.glass is not None:
            _draw_vessels_through(rs, g, strokes, self.glass)
        self.lines, self.dots, self.holes = strokes.arrays()
        wall = _draw_wall(rs, g, 0.5 * self.description['diameter_mm'])
        self.wall, self.bones, self.wall_slope, self.wall_profiles = wall if wall is not None else (None, [], 0.0, None)
        self.grain_hu = rs.uniform(*GRAIN_HU)
        self.opacity = None
        if rs.uniform() < OPACITY_SHARE:
            # patchy denser lung on one side of the field (dependent lung, against the wall if there is one):
            # direction, HU added, how far it reaches (-1: a sliver at the edge .. 1: most of the field)
            side = rs.uniform(0.0, _TAU)
            ux, uy = (self.wall['ux'], self.wall['uy']) if self.wall is not None else (math.cos(side), math.sin(side))
            self.opacity = (ux, uy, rs.uniform(*OPACITY_HU), rs.uniform(-0.5, 0.5))


class _View(object):
    """The random choices of one view: slice, in-plane transform, noise and specks."""

    def __init__(self, rs, scene, g):
        self.z = rs.uniform(-0.6, 0.6) * scene.description['z_half_mm']
        self.angle = rs.uniform(-15.0, 15.0) * (math.pi / 180.0)
        self.shift = (rs.uniform(-2.0, 2.0) * g.px, rs.uniform(-2.0, 2.0) * g.px)
        self.quarter_turns = int(rs.randint(4))
        self.flipped = bool(rs.randint(2))
        # uniform, not normal, white noise: 10x faster to draw, and Gaussian enough once filtered
        self.noise = rs.random_sample((g.canvas, g.canvas))
        self.grain = rs.standard_normal((g.grain.grid, g.grain.grid))
        # specks: sub-voxel vessels cut across.  Positions (px from the canvas centre) and voxel occupancy, faint
        # ones far more common than bright ones; the first `g.clustered` sit near a random point of a vessel
        # (small branches cluster around the larger ones), the rest anywhere
        u = rs.random_sample((4, g.specks))
        self.speck_x = (u[0] - 0.5) * g.canvas
        self.speck_y = (u[1] - 0.5) * g.canvas
        self.speck_occupancy = u[2] * u[2] * g.speck_occupancy
        self.speck_anchor = u[3, :g.clustered]
        self.speck_offset = rs.normal(0.0, g.cluster_px, (2, g.clustered))


def _transform_strokes(scene, view, b, g):
    """Lines [7, n], dots [5, m] and holes [5, k] of one view (patch index b first), moved to its slice and
    transform; of the lines only those that can reach the canvas."""
    c, s = math.cos(view.angle), math.sin(view.angle)
    z = view.z
    reach = 0.5 * g.canvas + 1.0
    x, y, cos_h, sin_h, radius, weight, sx, sy, zc, zh = scene.lines
    X, Y = x + z * sx, y + z * sy
    X, Y = c * X - s * Y + view.shift[0], s * X + c * Y + view.shift[1]
    visible = weight * np.minimum(np.maximum(1.0 - np.abs(z - zc) / zh, 0.0), 1.0)
    keep = (np.abs(X) < reach + radius) & (np.abs(Y) < reach + radius) & (visible > 0.0)
    lines = np.stack([np.full(X.shape, float(b)), X, Y, c * cos_h - s * sin_h, s * cos_h + c * sin_h, radius,
                      visible])[:, keep]

    def moved(spots):
        x, y, radius, weight, sx, sy = spots
        X, Y = x + z * sx, y + z * sy
        return np.stack([np.full(X.shape, float(b)), c * X - s * Y + view.shift[0], s * X + c * Y + view.shift[1],
                         radius, weight])
    return lines, moved(scene.dots), moved(scene.holes)


def _specks(items, parts, g):
    """Specks of all views as (patch, x, y, occupancy): the clustered ones moved next to a vessel point of their
    view (if any is visible), then shifted by their offset."""
    columns = []
    for b, (_, view) in enumerate(items):
        x, y = view.speck_x.copy(), view.speck_y.copy()
        lines = parts[b][0]
        if lines.shape[1]:
            pick = np.minimum((view.speck_anchor * lines.shape[1]).astype(np.int64), lines.shape[1] - 1)
            x[:g.clustered] = lines[1, pick] + view.speck_offset[0]
            y[:g.clustered] = lines[2, pick] + view.speck_offset[1]
        columns.append((np.full(x.shape, float(b)), x, y, view.speck_occupancy))
    return [np.concatenate([c[i] for c in columns]) for i in range(4)]


def _render(items, g, window, want_masks):
    """items: (scene, view) pairs.  Returns uint8 [B, H, W] and the nodule masks (bool [B, H, W]) or None."""
    count = len(items)
    turns = [(math.cos(v.angle), math.sin(v.angle), v.angle) for _, v in items]
    scalars = []
    coarse, fine = [], []
    for scene, view in items:
        mix = view.z * (0.5 * math.pi) / scene.texture_mm
        cm, sm = math.cos(mix), math.sin(mix)
        coarse.append(cm * scene.coarse[0] + sm * scene.coarse[1])
        fine.append(cm * scene.fine[0] + sm * scene.fine[1])
        gx, gy, ghu = scene.gradient
        c, s = math.cos(view.angle), math.sin(view.angle)
        scalars.append([scene.parenchyma_hu, c * gx - s * gy, s * gx + c * gy, ghu, scene.coarse_hu, scene.fine_hu,
                        scene.tissue_hu, scene.vessel_hu, scene.noise_hu])
    bg_hu, grad_x, grad_y, grad_hu, coarse_hu, fine_hu, tissue_hu, vessel_hu, noise_hu = (
        np.array(scalars, dtype=np.float64).T.reshape(-1, count, 1, 1))
    texture = g.coarse(np.array(coarse))
    mottle = g.fine(np.array(fine))
    hu = (bg_hu + (grad_hu / g.canvas) * (g.x * grad_x + g.y * grad_y) + coarse_hu * texture + fine_hu * mottle)
    hu = hu + _opacities(items, turns, texture, mottle, g)

    glass_fill, glass_inside = _render_blobs(
        [scene.glass and scene.glass.section(view.z, turn, view.shift) for (scene, view), turn in zip(items, turns)],
        mottle, g)
    solid_fill, solid_inside = _render_blobs(
        [scene.solid and scene.solid.section(view.z, turn, view.shift) for (scene, view), turn in zip(items, turns)],
        mottle, g)
    nodule = 1.0 - (1.0 - glass_fill) * (1.0 - solid_fill)
    parts = [_transform_strokes(scene, view, b, g) for b, (scene, view) in enumerate(items)]
    specks = _specks(items, parts, g)
    vessels = _paint(np.concatenate([p[0] for p in parts], axis=1), np.concatenate([p[1] for p in parts], axis=1),
                     specks, count, g)
    airways = _paint(np.zeros((7, 0)), np.concatenate([p[2] for p in parts], axis=1), None, count, g)
    # ground glass is partial filling of air spaces: it adds to what is there, so vessels show through it
    hu = hu + (vessel_hu - hu) * vessels
    hu = hu + (AIR_HU - hu) * airways
    hu = hu + (tissue_hu - hu) * nodule
    for i, (scene, view) in enumerate(items):
        for bubble in scene.bubbles:
            blob = bubble.section(view.z, turns[i], view.shift)
            if blob is not None:
                dx, dy = g.x[0] - blob[0], g.y[0] - blob[1]
                air = _smoothstep((blob[2] - np.sqrt(dx * dx + dy * dy)) / blob[3]) * nodule[i]
                hu[i] = hu[i] + (AIR_HU + 50.0 - hu[i]) * air
    chosen = [i for i, (scene, _) in enumerate(items) if scene.wall is not None]
    if chosen:
        walls = []
        for i in chosen:
            scene, view = items[i]
            wall = dict(scene.wall)
            c, s = turns[i][0], turns[i][1]
            wall['ux'], wall['uy'] = c * wall['ux'] - s * wall['uy'], s * wall['ux'] + c * wall['uy']
            wall['distance'] += view.z * scene.wall_slope      # the chest wall is oblique to the slice too
            wall['origin_x'], wall['origin_y'] = view.shift
            walls.append(wall)
        profiles = np.array([items[i][0].wall_profiles for i in chosen])
        occupancy, wall_hu, skirt, streaks = _render_wall(walls, profiles, [items[i][0].bones for i in chosen],
                                                          texture[chosen], mottle[chosen], g)
        hu[chosen] = hu[chosen] + skirt + (wall_hu - hu[chosen] - skirt) * occupancy + streaks
    # quantum noise enters with the projections, so the reconstruction kernel shapes it like the anatomy
    noise = np.array([view.noise for _, view in items])
    # lung tissue is air with a fluctuating, never negative share of tissue in each voxel: its texture is skewed
    # towards bright (a squared field) - faint specks and strands on a darker floor
    grain = g.grain(np.array([view.grain for _, view in items]))
    grain = np.array([scene.grain_hu for scene, _ in items]).reshape(-1, 1, 1) * (grain * grain - 1.0)
    hu = _scanner(hu + grain + (noise_hu * g.noise_gain) * (noise - 0.5), g)
    low, high = window
    grey = np.minimum(np.maximum(np.rint((hu - low) * (255.0 / (high - low))), 0.0), 255.0).astype(np.uint8)
    b = g.border
    masks = np.maximum(glass_inside, solid_inside)[:, b:b + g.size, b:b + g.size] >= 0.5 if want_masks else None
    for i, (_, view) in enumerate(items):
        grey[i] = _orient(grey[i], view)
        if masks is not None:
            masks[i] = _orient(masks[i], view)
    return grey, masks


def _opacities(items, turns, texture, mottle, g):
    """HU added by the patchy dependent opacities of the views that have one, [B, H, W] (or 0.0)."""
    chosen = [i for i, (scene, _) in enumerate(items) if scene.opacity is not None]
    if not chosen:
        return 0.0
    rows = []
    for i in chosen:
        ux, uy, hu, reach = items[i][0].opacity
        c, s = turns[i][0], turns[i][1]
        shift = items[i][1].shift
        rows.append([c * ux - s * uy, s * ux + c * uy, hu, reach - (shift[0] * (c * ux - s * uy)
                                                                    + shift[1] * (s * ux + c * uy)) / g.half])
    ux, uy, hu, reach = np.array(rows, dtype=np.float64).T.reshape(4, -1, 1, 1)
    # how far towards the dependent side, in half-fields; the lung's coarse texture makes the border patchy
    position = (g.x * ux + g.y * uy) * (1.0 / g.half) + reach
    out = np.zeros((len(items), g.canvas, g.canvas))
    out[chosen] = hu * _smoothstep((position - 1.0 + 0.6 * texture[chosen] + 0.25 * mottle[chosen]) * 1.2)
    return out


def _orient(image, view):
    """One of the eight symmetries of the square: quarter turns, then a left-right flip."""
    image = np.rot90(image, view.quarter_turns)
    return image[:, ::-1] if view.flipped else image


# ----------------------------------------------------------------------------- public interface

def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check(subtype, nodules, views, seed, resolution, mm_per_pixel, window):
    if subtype not in SUBTYPES:
        raise ValueError('unknown nodule subtype %r: expected one of %s' % (subtype, ', '.join(SUBTYPES)))
    if not _is_int(nodules) or nodules <= 0:
        raise ValueError('the number of nodules must be a whole number of at least 1, got %r' % (nodules,))
    if not _is_int(views) or views <= 0:
        raise ValueError('views must be a whole number of at least 1, got %r' % (views,))
    if not _is_int(seed) or not 0 <= seed < 2 ** 64:
        raise ValueError('seed must be a whole number in [0, 2**64), got %r' % (seed,))
    if not values.is_power_of_two(resolution, 16):
        raise ValueError('resolution must be a power of two of at least 16, got %r' % (resolution,))
    if not mm_per_pixel > 0 or len(window) != 2 or not window[1] > window[0]:
        raise ValueError('mm_per_pixel must be positive and window must be (low, high) with low < high')


def draw_dataset(subtype, nodules, views, seed, resolution=64, progress=None, mm_per_pixel=DEFAULT_MM_PER_PIXEL,
                 window=DEFAULT_WINDOW, masks=False):
    """Synthetic lung-window CT patches of `nodules` 3-D phantom nodules, `views` patches each (not patient data).

    subtype: 'AIS', 'MIA' or 'IAC'.  nodules, views: whole numbers >= 1.  seed: integer in [0, 2**64).
    resolution: power of two >= 16; the field of view stays 64 * mm_per_pixel millimetres wide.
    progress: optional callable, given the number of patches just finished.
    window: (low, high) HU mapped to grey levels 0..255.  masks: also return the nodule outlines.

    Returns (images, groups, info): images uint8 [nodules * views, 1, resolution, resolution], the views of
    nodule 0 first; groups int64 [N], the nodule index of each image; info a dict of NumPy arrays:
      per nodule:  kind (index into KINDS), diameter_mm, solid_mm (0 for pure ground glass), glass_hu (NaN for
                   solid nodules), lobulation, spiculated, bubbles, vessel_contact
      per image:   slice_mm, shift_mm [N, 2], rotation_deg, quarter_turns, flipped
      masks:       bool [N, resolution, resolution], the nodule as it is cut by the image's slice (only with
                   masks=True): pixels whose centre lies inside the outline of the ground glass or of the solid
                   part (where the soft margin is half way, i.e. its smoothstep >= 0.5, after the lung texture has
                   made it irregular), bubbles inside it counted as nodule, spicules and vessels not; in the
                   image's orientation, at the image's resolution.  Drawing masks does not change the images.
    Nodule i depends only on (subtype, seed, i); its view j only on (subtype, seed, i, j).
    """
    _check(subtype, nodules, views, seed, resolution, mm_per_pixel, window)
    nodules, views, seed, resolution = int(nodules), int(views), int(seed), int(resolution)
    g = _Geometry(resolution, float(mm_per_pixel))
    window = (float(window[0]), float(window[1]))
    total = nodules * views
    # one generator, re-seeded per stream: constructing a RandomState costs ~0.1 ms on NumPy 2
    rs = np.random.RandomState(0)
    key = [seed & 0xFFFFFFFF, seed >> 32, _SUBTYPE_CODES[subtype]]
    images = np.empty((total, 1, resolution, resolution), dtype=np.uint8)
    outlines = np.zeros((total, resolution, resolution), dtype=bool) if masks else None
    descriptions, view_records = [], []
    scene, scene_index = None, -1
    for start in range(0, total, _CHUNK):
        stop = min(total, start + _CHUNK)
        items = []
        for index in range(start, stop):
            nodule, view = divmod(index, views)
            if nodule != scene_index:
                rs.seed(key + [nodule & 0xFFFFFFFF, nodule >> 32, 0])
                scene, scene_index = _Scene(rs, subtype, g), nodule
                descriptions.append(scene.description)
            rs.seed(key + [nodule & 0xFFFFFFFF, nodule >> 32, view + 1])
            items.append((scene, _View(rs, scene, g)))
            view_records.append(items[-1][1])
        grey, chunk_masks = _render(items, g, window, masks)
        images[start:stop, 0] = grey
        if masks:
            outlines[start:stop] = chunk_masks
        if progress is not None:
            progress(stop - start)
    groups = np.repeat(np.arange(nodules, dtype=np.int64), views)
    info = _info(descriptions, view_records, g)
    if masks:
        info['masks'] = outlines
    return images, groups, info


def _info(descriptions, view_records, g):
    def column(name, dtype):
        return np.array([d[name] if d[name] is not None else np.nan for d in descriptions], dtype=dtype)
    return dict(kind=column('kind', np.int64), diameter_mm=column('diameter_mm', np.float64),
                solid_mm=column('solid_mm', np.float64), glass_hu=column('glass_hu', np.float64),
                lobulation=column('lobulation', np.float64), spiculated=column('spiculated', bool),
                bubbles=column('bubbles', np.int64), vessel_contact=column('vessel_contact', bool),
                slice_mm=np.array([v.z for v in view_records]),
                shift_mm=np.array([v.shift for v in view_records]).reshape(-1, 2) * g.mm,
                rotation_deg=np.array([v.angle * 180.0 / math.pi for v in view_records]),
                quarter_turns=np.array([v.quarter_turns for v in view_records], dtype=np.int64),
                flipped=np.array([v.flipped for v in view_records], dtype=bool))


def make_phantoms(subtype, count, seed, resolution=64, progress=None, mm_per_pixel=DEFAULT_MM_PER_PIXEL,
                  window=DEFAULT_WINDOW):
    """`count` synthetic patches, one view of each of `count` phantom nodules: uint8 [count, H, W].

    The same as draw_dataset(subtype, count, 1, seed, ...)[0][:, 0]; patch i depends only on (subtype, seed, i).
    """
    if not _is_int(count) or count <= 0:
        raise ValueError('count must be a whole number of at least 1, got %r' % (count,))
    images, _, _ = draw_dataset(subtype, count, 1, seed, resolution, progress, mm_per_pixel, window)
    return images[:, 0]
