"""Fréchet Radiomics Distance (FRD, Konz, Osuala et al. 2024/2026) and the radiomic features it is computed on.

FRD is the Fréchet distance between Gaussians fitted to standardised radiomic features of two image sets, features
a radiologist can name (intensity statistics, grey-level co-occurrence, run-length, size-zone and neighbourhood
tone-difference textures, on the image and its wavelet bands) instead of an ImageNet network's activations.
Lower = closer.

The figures come from the authors' package `frd-score` (its default, FRD v1), running PyRadiomics
(`pyradiomics-bhklab` builds it for current Python): this module writes the patches as 8-bit PNG files to a
temporary folder (the package reads images from files), extracts each one's features with the package's own
v1 extractor and per-image function, and computes the distance with the package's own z-scoring and Fréchet
distance, in the order its compute_frd() does (tests check that the figure is the package's).  Doing the steps
here rather than calling compute_frd() once gives a progress bar, a worker count of our choosing (the package
would take all cores but two) and the standardised features themselves, which are the feature space of
precision/recall/density/coverage (prdc.py), so the slow extraction runs once for both.

FRD v1, as frd-score 1.0.1 runs it on 64x64 PNG patches:
  - images resampled to 2 x 2 pixel spacing (32 x 32) and intensity-normalised (PyRadiomics normalize, scale 100,
    bin width 5), the whole patch as the region (one corner pixel left out, as the package does);
  - feature classes firstorder, glcm (22 features), glrlm, glszm, ngtdm, plus the numeric diagnostics the paper
    kept, on the original image and its 4 wavelet bands: 398 numbers per patch (the LoG filter of the v1
    configuration is 3-D and needs 4 slices, so PyRadiomics skips it for 2-D images);
  - z-scores with the mean and standard deviation of the first (real) set; columns that are then NaN or infinite
    in either set (e.g. constant in the real set) are dropped: 'features used' is what remains;
  - FRD = log of the squared Fréchet distance.
On the shipped phantoms (150 + 150 patches) v1 separates the subtypes modestly (two halves of AIS 4.22, AIS
against IAC 5.06), where v0 (Original image only, min-max scaling, no log) does not (71.26 and 63.63); so v1 it is
(docs/metrics.md has the measurements and commands).  Every figure is reported with its version, feature counts
and normalisation (frd_settings()).

Speed: PyRadiomics spends ~0.18 CPU-seconds per 64x64 patch (176 per 1000 patches, measured on one core);
`workers` splits that over processes.

Needs Python >= 3.10 and the optional packages in requirements-metrics.txt.  On older Pythons (the legacy Python
3.6 stack) unavailable_reason() says so in one line and nothing here runs; the other metrics of nodules/metrics
work on both stacks.  No TensorFlow here.
"""
import contextlib
import io
import logging
import os
import sys
import tempfile

import numpy as np

from nodules.util.errors import UserError

MIN_PYTHON = (3, 10)
FRD_VERSION = 'v1'
INSTALL_HINT = 'pip install -r requirements-metrics.txt'
PACKAGES = ('frd-score', 'pyradiomics-bhklab', 'SimpleITK', 'PyWavelets', 'numpy', 'scipy')


def unavailable_reason():
    """None when FRD and radiomic features can be computed here; otherwise one line saying what they need."""
    if sys.version_info[:2] < MIN_PYTHON:
        return ('FRD and radiomic features need Python >= %d.%d (the frd-score package does); this is Python %d.%d'
                % (MIN_PYTHON + tuple(sys.version_info[:2])))
    try:
        import frd_score.frd  # noqa: F401
        import radiomics  # noqa: F401
    except ImportError as error:
        return ('FRD and radiomic features need the optional packages frd-score and pyradiomics-bhklab (%s): %s'
                % (INSTALL_HINT, error))
    return None


def require():
    """Raise UserError with unavailable_reason() when FRD cannot run here."""
    reason = unavailable_reason()
    if reason:
        raise UserError(reason)


def package_versions():
    """{package: version} of what the figures depend on (installed distributions)."""
    from importlib import metadata
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# ---------------------------------------------------------------------------------------------------------------
# Features


def _package():
    require()
    import frd_score.frd as package
    return package


@contextlib.contextmanager
def _quiet():
    """PyRadiomics logs a warning per image (e.g. that 2-D images skip LoG) and frd-score prints results:
    silence both, as compute_frd() does when not verbose."""
    import radiomics
    logger = logging.getLogger('radiomics')
    level = logger.level
    radiomics.setVerbosity(60)
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _as_patches(images):
    """uint8 [N, H, W] from [N, H, W] or [N, 1, H, W] grey levels 0..255."""
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3 or len(x) == 0:
        raise ValueError('radiomic features need grayscale images [N, H, W] or [N, 1, H, W], N >= 1; got shape %s'
                         % (x.shape,))
    if x.dtype != np.uint8:
        raise ValueError('radiomic features are computed on 8-bit patches (uint8), got %s' % x.dtype)
    return x


def extractor():
    """frd-score's FRD v1 PyRadiomics extractor for 2-D images, built as the package's get_feature_extractor()
    builds it, except that its configuration file is read as UTF-8 here: the file has a non-ASCII comment, and
    PyRadiomics would read it in the locale's encoding, which fails where that is ASCII (a bare C locale)."""
    package = _package()
    from radiomics import featureextractor
    from ruamel.yaml import YAML  # PyRadiomics' own YAML reader (through pykwalify)
    with open(package.V1_CONFIG_2D, encoding='utf-8') as config:
        params = YAML(typ='safe').load(config)
    feature_extractor = featureextractor.RadiomicsFeatureExtractor(params)
    if 'LoG' in feature_extractor.enabledImagetypes:  # as the package does; 2-D extraction skips LoG anyway
        feature_extractor.enableImageTypeByName('LoG', customArgs={'sigma': list(package.V1_DEFAULT_LOG_SIGMA)})
    return feature_extractor


def _write_pngs(images, folder):
    from PIL import Image
    paths = []
    for index, image in enumerate(images):
        path = os.path.join(folder, 'patch-%06d.png' % index)
        Image.fromarray(image, 'L').save(path)
        paths.append(path)
    return paths


def radiomic_features(images, workers=1, progress=None):
    """frd-score v1 radiomic features of 8-bit patches: (features float64 [N, F], names [F]).

    images: uint8 [N, H, W] or [N, 1, H, W].  workers: processes (1 = this one).  progress: optional callable,
    given the number of patches just finished.  A patch PyRadiomics cannot describe gets a row of NaN (the FRD
    step drops such rows, as the package does).
    """
    package = _package()
    patches = _as_patches(images)
    features = extractor()
    with tempfile.TemporaryDirectory(prefix='nodules-frd-') as folder, _quiet():
        pairs = [(path, None) for path in _write_pngs(patches, folder)]
        one = _ImageFeatures(features)
        if workers <= 1:
            results = []
            for pair in pairs:
                results.append(one(pair))
                if progress:
                    progress(1)
        else:
            import multiprocessing
            # spawn, not fork: the parent may hold TensorFlow's or SimpleITK's threads, which fork cannot copy
            with multiprocessing.get_context('spawn').Pool(workers) as pool:
                results = []
                for result in pool.imap(one, pairs, chunksize=4):
                    results.append(result)
                    if progress:
                        progress(1)
    names = next((r[1] for r in results if r is not None), None)
    if names is None:
        raise ValueError('PyRadiomics could not describe any of the %d patches' % len(patches))
    rows = [r[0] if r is not None else [np.nan] * len(names) for r in results]
    return np.array(rows, dtype=np.float64), names


class _ImageFeatures(object):
    """The package's per-image step, as a picklable callable for worker processes: (values, names) or None."""

    def __init__(self, feature_extractor):
        self.feature_extractor = feature_extractor

    def __call__(self, pair):
        package = _package()
        with _quiet():
            result = package.process_image_mask_pair(pair, feature_extractor=self.feature_extractor,
                                                     frd_version=FRD_VERSION)
        if result is None:
            return None
        values, named, _ = result
        return list(values), list(named.keys())


# ---------------------------------------------------------------------------------------------------------------
# Distance


def standardise(real_features, fake_features, names=None):
    """frd-score v1's preparation of two feature sets: rows with NaN dropped, float32, z-scores with the real
    set's mean and standard deviation, then columns that are NaN or infinite in either set dropped.

    Returns (real_z, fake_z, kept_names, info) with real_z, fake_z float32 [n, F'] and info a dict: features
    extracted and used, rows dropped per set.
    """
    package = _package()
    sets = []
    dropped_rows = []
    for features in (real_features, fake_features):
        features = np.asarray(features, dtype=np.float64)
        bad = np.isnan(features).any(axis=1)
        dropped_rows.append(int(bad.sum()))
        sets.append(features[~bad].astype(np.float32))
    if min(len(s) for s in sets) < 2:
        raise ValueError('FRD needs at least 2 patches with radiomic features per set')
    if names is None:
        names = ['feature_%d' % i for i in range(sets[0].shape[1])]
    with _quiet(), np.errstate(divide='ignore', invalid='ignore'):  # a constant column gives inf: dropped below
        normalised = [package.z_score_normalize(s, new_min=0, new_max=1, feature_names=names,
                                                base_distribution=sets[0], replace_nan=False,
                                                handle_std_zero=False) for s in sets]
    bad_columns = np.zeros(normalised[0].shape[1], dtype=bool)
    for n in normalised:
        bad_columns |= np.isnan(n).any(axis=0) | np.isinf(n).any(axis=0)
    keep = ~bad_columns
    info = dict(features_extracted=int(len(names)), features_used=int(keep.sum()),
                rows_dropped=dict(real=dropped_rows[0], fake=dropped_rows[1]))
    return normalised[0][:, keep], normalised[1][:, keep], [n for n, k in zip(names, keep) if k], info


def frechet_radiomics_distance(real_features, fake_features, names=None):
    """FRD v1 of two radiomic feature sets (radiomic_features() of the real and the generated patches).

    Returns a dict: value (log of the squared Fréchet distance), features_extracted, features_used,
    real_count, fake_count, rows_dropped.
    """
    package = _package()
    real_z, fake_z, _, info = standardise(real_features, fake_features, names)
    squared = package.calculate_frechet_distance(np.mean(real_z, axis=0), np.cov(real_z, rowvar=False),
                                                 np.mean(fake_z, axis=0), np.cov(fake_z, rowvar=False))
    value = float(np.log(squared)) if squared > 0 else float('-inf')
    result = dict(value=value, real_count=int(len(real_z)), fake_count=int(len(fake_z)))
    result.update(info)
    return result


def frd_settings(feature_extractor=None):
    """What an FRD figure means, for reports: version, filters, feature classes, PyRadiomics settings,
    normalisation, distance, package versions."""
    feature_extractor = feature_extractor or extractor()
    settings = feature_extractor.settings
    return dict(
        version=FRD_VERSION,
        implementation='frd-score (authors\' package): v1 extractor and per-image extraction, z-scoring and '
                       'Frechet distance',
        image_types=sorted(feature_extractor.enabledImagetypes),
        image_types_note='LoG is 3-D in PyRadiomics and skipped for 2-D patches',
        feature_classes=sorted(feature_extractor.enabledFeatures),
        pyradiomics_settings=dict((key, settings.get(key)) for key in
                                  ('binWidth', 'normalize', 'normalizeScale', 'resampledPixelSpacing',
                                   'interpolator', 'force2D', 'voxelArrayShift')),
        normalisation='z-score with the real set\'s mean and std (norm_ref d1); NaN/inf columns dropped',
        distance='log of the squared Frechet distance',
        package_versions=package_versions())
