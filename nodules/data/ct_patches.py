"""Nodule-centred 2-D patches from CT volumes and a LUNA16-style nodule list.

    images, labels, groups, metadata = patches_from_ct('scans/', 'nodules.csv', spacing=0.7, window=(-1350, 150))

The nodule list is a CSV with the columns `seriesuid, coordX, coordY, coordZ, diameter_mm` (world millimetres in
the patient LPS frame, as in LUNA16) and optionally a `label` (or `subtype`) column.  Scans are found below the
scans folder by series UID: `<uid>.mhd`, `<uid>.mha`, `<uid>.nii` or `<uid>.nii.gz` anywhere below it, a DICOM
series whose SeriesInstanceUID is the uid, or a folder named `<uid>` holding one DICOM series.

Geometry.  Every patch is resampled by SimpleITK (linear interpolation) onto its own grid: `resolution` x
`resolution` pixels of `spacing` mm in the axial plane, identity direction in LPS, so whatever the scan's own
orientation, column index grows towards the patient's left and row index towards posterior (the usual
radiological display: patient's right on the image's left, anterior at the top).  Points outside the scan read
as air (-1000 HU): a nodule near the border gives a padded patch, never a shifted one.

Centre convention.  The nodule sits at the geometric centre of the patch, continuous pixel coordinate
((resolution - 1) / 2, (resolution - 1) / 2): for an even size that is the corner shared by the four middle
pixels (31 and 32 for 64).  Unlike "pixel resolution // 2", this stays exact under flips, 90-degree rotations
and the 2x2 averaging of the lower-resolution levels.  Along z the same rule applies to `slices` planes spaced at
the scan's own slice spacing: for odd `slices` the middle plane goes through the nodule, the others are its
neighbours at +-1, +-2, ... slice spacings.

Windowing.  grey = clip(rint((HU - low) / (high - low) * 255), 0, 255) as uint8.

Nodule masks (patches_and_masks_from_ct).  A folder of segmentation volumes, one per scan, named after the scan's
series UID like the scans (`<uid>.nii.gz`, `.nii`, `.mhd` or `.mha` anywhere below it), each on exactly the scan's
voxel grid (size, spacing, origin and direction), every non-zero voxel nodule.  The mask patches are cut on the
same grids as the images, with nearest-neighbour interpolation and 0 outside the volume, and augmented alike:
uint8 [N, res, res], 255 inside the nodule, 0 outside.

Output order follows the CSV: for each usable row, its planes from inferior to superior (increasing z), and
for each plane the augmentations in the order of AUGMENTATIONS.  Each usable row is one nodule: its planes and
their augmentations share one group number (0, 1, ... in the order of the rows used).
"""
import contextlib
import csv
import math
import os
import sys
import tempfile
from collections import OrderedDict, namedtuple

import numpy as np
import SimpleITK as sitk

from nodules.util import progress as progress_reports
from nodules.util import values
from nodules.util.errors import UserError, check_folder_exists, check_regular_file, describe_path

REQUIRED_COLUMNS = ('seriesuid', 'coordX', 'coordY', 'coordZ', 'diameter_mm')
# A nodule list is read whole: refuse one larger than this (a million rows take about 60 MB) before reading.
MAX_ANNOTATIONS_BYTES = 64 * 2 ** 20
LABEL_COLUMNS = ('label', 'subtype')  # the first one present is used
VOLUME_EXTENSIONS = ('.nii.gz', '.nii', '.mhd', '.mha')  # longest first, so 'x.nii.gz' is not taken as 'x.nii'
# Files that are certainly not DICOM: directories holding only these are not handed to GDCM (which would open them).
NOT_DICOM_EXTENSIONS = VOLUME_EXTENSIONS + ('.raw', '.zraw', '.csv', '.txt', '.json', '.png', '.jpg', '.npy')
AIR_HU = -1000.0
# A chest CT in Hounsfield units always holds air or lung well below this; a volume that does not is most likely
# not CT, or CT stored without its rescale intercept, and windowing it would give meaningless patches.
MOST_AIR_HU = -500.0
DICOM_MODALITY_TAG = '0008|0060'

# What a patch may ask for.  In-plane pixels finer than 0.01 mm or coarser than 10 mm make no sense for chest CT
# (scanners resolve about 0.3-1 mm); neighbour planes are at the scan's own slice spacing, so 64 of them span
# several centimetres; 1024 pixels is the largest image a progressive GAN of this kind is built for.
MIN_SPACING_MM, MAX_SPACING_MM = 0.01, 10.0
MAX_SLICES = 64
MIN_RESOLUTION, MAX_RESOLUTION = 4, 1024
# The patches of one run are held in memory before they are written: at most this many pixels in all (2 GiB
# of float32 while they are windowed).
MAX_TOTAL_PIXELS = 2 ** 29

# (name, function of a 2-D [H, W] array).  np.rot90 turns counter-clockwise as displayed.
AUGMENTATIONS = (
    ('original', lambda patch: patch),
    ('horizontal flip', np.fliplr),
    ('rotate 90', lambda patch: np.rot90(patch, 1)),
    ('rotate 180', lambda patch: np.rot90(patch, 2)),
    ('rotate 270', lambda patch: np.rot90(patch, 3)),
)

# Why a row was left out; the keys are counted in the summary line and the metadata.
SKIP_BAD_VALUES = 'bad values'
SKIP_NO_SCAN = 'no scan'
SKIP_UNREADABLE = 'unreadable scan'
SKIP_NOT_CT = 'not a CT volume'
SKIP_OUTSIDE = 'outside the scan'

Nodule = namedtuple('Nodule', 'row seriesuid point diameter label')
ScanSource = namedtuple('ScanSource', 'kind path files')  # kind 'file' (files = [path]) or 'dicom' (path = folder)


class RowSkipped(Exception):
    """One annotation row (or all rows of one scan) cannot give patches; `reason` is one of the SKIP_* keys."""

    def __init__(self, reason, message):
        Exception.__init__(self, message)
        self.reason = reason
        self.message = message


# ----------------------------------------------------------------------------------------------------------------
# Nodule list


def read_annotations(csv_path, label=None):
    """Parse the nodule list.

    Returns (nodules, skipped, label_column, other_label_rows): the usable rows as Nodule tuples, a list of
    (row, reason, message) for rows with bad values, the name of the label column (None without one) and how
    many rows `label` filtered out.  Row numbers are those of a spreadsheet: the header is row 1.
    Raises UserError when the file itself is unusable.
    """
    check_regular_file(csv_path, 'CSV file')  # a pipe would block, a device such as /dev/zero never end
    try:
        # utf-8-sig: spreadsheet programs often start CSV files with a byte-order mark.
        with open(csv_path, newline='', encoding='utf-8-sig') as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_ANNOTATIONS_BYTES:
                raise UserError('%s: holds %.0f MB; a nodule list of at most %.0f MB is read'
                                % (csv_path, size / 1e6, MAX_ANNOTATIONS_BYTES / 1e6))
            reader = csv.DictReader(f)
            header = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = header
            records = [(reader.line_num, record) for record in reader]
    except (IOError, OSError) as error:
        raise UserError('%s: cannot read (%s)' % (csv_path, error.strerror or error))
    except (UnicodeDecodeError, csv.Error) as error:
        raise UserError('%s: not a readable CSV text file (%s)' % (csv_path, error))
    if not header:
        raise UserError('%s: is empty (expected a header row with %s)' % (csv_path, ', '.join(REQUIRED_COLUMNS)))
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise UserError('%s: missing column(s) %s; the header has %s (needed: %s)'
                            % (csv_path, ', '.join(missing), ', '.join(header), ', '.join(REQUIRED_COLUMNS)))
    label_column = next((name for name in LABEL_COLUMNS if name in header), None)
    if label is not None and label_column is None:
        raise UserError('%s: --label %s needs a `label` or `subtype` column, but the header has only %s'
                            % (csv_path, label, ', '.join(header)))
    if not records:
        raise UserError('%s: has a header but no nodule rows' % csv_path)

    nodules, skipped, other_label_rows, labels_seen = [], [], 0, set()
    for row, record in records:
        row_label = (record.get(label_column) or '').strip() if label_column else None
        labels_seen.add(row_label)
        if label is not None and row_label != label:
            other_label_rows += 1  # filtered out, not an error: its other values are not even looked at
            continue
        try:
            nodules.append(_parse_row(record, label_column)._replace(row=row))
        except RowSkipped as skip:
            skipped.append((row, skip.reason, skip.message))
    if label is not None and not nodules and not skipped:
        raise UserError('%s: no row has %s %r (labels present: %s)'
                            % (csv_path, label_column, label, ', '.join(sorted(labels_seen - {''}))))
    return nodules, skipped, label_column, other_label_rows


def _parse_row(record, label_column):
    """One CSV record -> Nodule (row number still to be filled in), or RowSkipped naming every bad field."""
    def text(column):
        value = record.get(column)
        return value.strip() if value is not None else None  # None: the row has fewer fields than the header

    problems, numbers = [], {}
    seriesuid = text('seriesuid')
    if not seriesuid:
        problems.append('empty seriesuid')
    for column in REQUIRED_COLUMNS[1:]:
        value = text(column)
        if value is None:
            problems.append('%s is missing' % column)
            continue
        try:
            numbers[column] = float(value)
        except ValueError:
            problems.append('%s %r is not a number' % (column, value))
            continue
        if not math.isfinite(numbers[column]):
            problems.append('%s %r is not a finite number' % (column, value))
    if numbers.get('diameter_mm', 0) < 0:
        problems.append('diameter_mm %r is negative' % text('diameter_mm'))
    label = None
    if label_column is not None:
        label = text(label_column)
        if not label:
            problems.append('empty %s' % label_column)
    if problems:
        raise RowSkipped(SKIP_BAD_VALUES, '; '.join(problems))
    point = (numbers['coordX'], numbers['coordY'], numbers['coordZ'])
    return Nodule(None, seriesuid, point, numbers['diameter_mm'], label)


# ----------------------------------------------------------------------------------------------------------------
# Finding and reading scans


def _volume_uid(filename):
    """'1.2.3.mhd' -> '1.2.3'; None for files that are not single-file volumes."""
    lower = filename.lower()
    for extension in VOLUME_EXTENSIONS:
        if lower.endswith(extension):
            return filename[:-len(extension)]
    return None


def find_scans(scans_dir, seriesuids):
    """{uid: ScanSource} for the uids found below `scans_dir`, and {uid: why not} for some of the others.

    Volume files are matched by name first (cheap); only uids still missing make GDCM look into folders.
    Folders are visited in sorted order, so when a uid is present twice the choice is repeatable.
    """
    wanted = set(seriesuids)
    found, notes = {}, {}
    walk = []
    for folder, subfolders, filenames in os.walk(scans_dir):
        subfolders.sort()
        walk.append((folder, sorted(filenames)))
        for filename in sorted(filenames):
            uid = _volume_uid(filename)
            if uid in wanted and uid not in found:
                path = os.path.join(folder, filename)
                found[uid] = ScanSource('file', path, [path])

    missing = wanted - set(found)
    for folder, filenames in walk:
        if not missing:
            break
        if not any(not name.lower().endswith(NOT_DICOM_EXTENSIONS) for name in filenames):
            continue
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
        for uid in series_ids:
            if uid in missing:
                found[uid] = ScanSource('dicom', folder, list(
                    sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid)))
                missing.discard(uid)
        # A folder named after the uid stands for it even when its SeriesInstanceUID differs (anonymised copies).
        name = os.path.basename(os.path.normpath(folder))
        if name in missing and series_ids:
            if len(series_ids) == 1:
                found[name] = ScanSource('dicom', folder, list(
                    sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, series_ids[0])))
                missing.discard(name)
            else:
                notes[name] = ('folder %s holds %d DICOM series, none with SeriesInstanceUID %s'
                               % (folder, len(series_ids), name))
    return found, notes


@contextlib.contextmanager
def itk_quiet():
    """Keep SimpleITK's own messages off the terminal.

    Warnings go through ITK's global warning display (switched off), but some readers (MetaIO, GDCM) write
    straight to the process's stderr; that is sent to a scratch file while the block runs.  Errors still
    arrive as exceptions, whose text read_scan() and the callers below turn into one line.
    """
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr: nothing to keep off it
        saved = None
    try:
        if saved is None:
            yield
            return
        with tempfile.TemporaryFile() as sink:
            sys.stderr.flush()
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)


def _itk_reason(error):
    """The useful part of a SimpleITK exception text (which starts with source file names and addresses)."""
    text = str(error)
    if 'Unable to determine ImageIO reader' in text:
        return 'not an image format SimpleITK can read'
    text = text.split('ERROR:')[-1].strip()
    first, separator, rest = text.partition('): ')  # drop 'MetaImageIO(0x55d...): '
    if separator and '(0x' in first:
        text = rest
    return '; '.join(line.strip() for line in text.splitlines() if line.strip())[:200]


# Bytes per value of the MetaImage element types (.mhd headers).
METAIMAGE_VALUE_BYTES = {'MET_CHAR': 1, 'MET_UCHAR': 1, 'MET_SHORT': 2, 'MET_USHORT': 2, 'MET_INT': 4, 'MET_UINT': 4,
                         'MET_LONG': 4, 'MET_ULONG': 4, 'MET_LONG_LONG': 8, 'MET_ULONG_LONG': 8, 'MET_FLOAT': 4,
                         'MET_DOUBLE': 8}


def _metaimage_data_problem(path):
    """What is wrong with the data file a MetaImage header (.mhd) names: missing, or shorter than the voxels the
    header describes; None when that cannot be told (not a header, data inside it, compressed, a list of files)."""
    try:
        with open(path, 'rb') as f:
            text = f.read(1 << 16).decode('latin-1')
    except OSError:
        return None
    fields = {}
    for line in text.splitlines():
        key, equals, value = line.partition('=')
        if equals:
            fields[key.strip()] = value.strip()
    name = fields.get('ElementDataFile', '')
    if not name or name == 'LOCAL' or ' ' in name or name.startswith('LIST'):
        return None
    data_path = os.path.join(os.path.dirname(path), name)
    if not os.path.lexists(data_path):
        return 'its data file %s does not exist' % data_path
    if not os.path.isfile(data_path):
        return 'its data file %s is %s, not a file' % (data_path, describe_path(data_path))
    try:
        dims = [int(n) for n in fields['DimSize'].split()]
        needed = (METAIMAGE_VALUE_BYTES[fields['ElementType']] * int(fields.get('ElementNumberOfChannels', 1))
                  * int(np.prod(dims, dtype=np.float64)))
    except (KeyError, ValueError):
        return None
    size = os.path.getsize(data_path)
    if fields.get('CompressedData', 'False').lower() != 'true' and size < needed:
        return 'its data file %s holds %d bytes but the %s voxels of %s its header describes need %d: truncated' % (
            data_path, size, 'x'.join(str(n) for n in dims), fields['ElementType'], needed)
    return None


def read_scan(source):
    """The CT volume of a ScanSource as a sitk.Image, after checking that it is a 3-D scalar CT in HU.

    Raises RowSkipped (unreadable or not CT) with a message naming the file or folder.
    """
    modality = None
    try:
        if source.kind == 'dicom':
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(source.files)
            reader.MetaDataDictionaryArrayUpdateOn()
            image = reader.Execute()
            if reader.HasMetaDataKey(0, DICOM_MODALITY_TAG):
                modality = reader.GetMetaData(0, DICOM_MODALITY_TAG).strip()
        else:
            # Checked first: ITK says "No such file" of a MetaImage header whose data file is there but short, and
            # older versions (SimpleITK 1.x) read it without a word.
            problem = _metaimage_data_problem(source.path)
            if problem:
                raise RowSkipped(SKIP_UNREADABLE, '%s cannot be read (%s)' % (source.path, problem))
            image = sitk.ReadImage(source.path)
    except RuntimeError as error:
        raise RowSkipped(SKIP_UNREADABLE, '%s cannot be read (%s)' % (source.path, _itk_reason(error)))
    where = 'DICOM series in %s' % source.path if source.kind == 'dicom' else source.path
    if modality and modality != 'CT':
        raise RowSkipped(SKIP_NOT_CT, '%s has modality %s, not CT' % (where, modality))
    if image.GetDimension() != 3:
        raise RowSkipped(SKIP_NOT_CT, '%s is a %d-D image, not a 3-D CT volume' % (where, image.GetDimension()))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise RowSkipped(SKIP_NOT_CT, '%s has %d values per voxel, not a scalar CT volume'
                         % (where, image.GetNumberOfComponentsPerPixel()))
    if 'complex' in image.GetPixelIDTypeAsString():
        raise RowSkipped(SKIP_NOT_CT, '%s has complex voxels, not a CT volume' % where)
    statistics = sitk.MinimumMaximumImageFilter()
    statistics.Execute(image)
    if statistics.GetMinimum() > MOST_AIR_HU:
        raise RowSkipped(SKIP_NOT_CT, '%s values %g..%g do not look like Hounsfield units (a chest CT holds air '
                         'below %g HU)' % (where, statistics.GetMinimum(), statistics.GetMaximum(), MOST_AIR_HU))
    return image


def find_mask_volumes(masks_dir, seriesuids):
    """{uid: path} of the mask volumes below `masks_dir` named `<uid>.nii.gz` (.nii, .mhd, .mha), first in sorted
    order; a clear error for a uid without one."""
    check_folder_exists(masks_dir, 'folder of mask volumes', missing='no such masks folder')
    found = {}
    for folder, subfolders, filenames in os.walk(masks_dir):
        subfolders.sort()
        for filename in sorted(filenames):
            uid = _volume_uid(filename)
            if uid in seriesuids and uid not in found:
                found[uid] = os.path.join(folder, filename)
    missing = [uid for uid in seriesuids if uid not in found]
    if missing:
        raise UserError('%s: no mask volume for the scan %s (expected %s.nii.gz, .nii, .mhd or .mha below it)%s'
                        % (masks_dir, missing[0], missing[0],
                           '' if len(missing) == 1 else '; %d more scans lack one' % (len(missing) - 1)))
    return found


# Two voxel grids agree when their spacings and origins differ by less than this (mm) and their direction
# cosines by less than MASK_DIRECTION_TOLERANCE: what survives writing the header as decimal text.
MASK_GRID_TOLERANCE_MM = 1e-3
MASK_DIRECTION_TOLERANCE = 1e-5


def read_mask_volume(path, scan, scan_path):
    """The binary nodule mask (sitk uint8, 1 = nodule: every non-zero voxel) of the label map at `path`, after
    checking that it is a 3-D scalar volume of whole numbers on exactly the voxel grid of `scan` (read from
    `scan_path`); every problem is one UserError naming the file."""
    check_regular_file(path, 'mask volume')
    try:
        with itk_quiet():
            mask = sitk.ReadImage(path)
    except RuntimeError as error:
        raise UserError('%s: cannot be read as a mask volume (%s)' % (path, _itk_reason(error)))
    if mask.GetDimension() != 3 or mask.GetNumberOfComponentsPerPixel() != 1:
        raise UserError('%s: is a %d-D image with %d value(s) per voxel; a mask volume is 3-D with one label per '
                        'voxel' % (path, mask.GetDimension(), mask.GetNumberOfComponentsPerPixel()))
    for what, mine, theirs, tolerance in (
            ('size', mask.GetSize(), scan.GetSize(), 0),
            ('spacing', mask.GetSpacing(), scan.GetSpacing(), MASK_GRID_TOLERANCE_MM),
            ('origin', mask.GetOrigin(), scan.GetOrigin(), MASK_GRID_TOLERANCE_MM),
            ('direction', mask.GetDirection(), scan.GetDirection(), MASK_DIRECTION_TOLERANCE)):
        if np.max(np.abs(np.subtract(mine, theirs))) > tolerance:
            raise UserError('%s: its %s %s differs from the scan %s (%s); a mask volume must lie on the scan\'s '
                            'voxel grid' % (path, what, _numbers(mine), scan_path, _numbers(theirs)))
    if 'complex' in mask.GetPixelIDTypeAsString():
        raise UserError('%s: has complex voxels; a mask volume holds whole-number labels' % path)
    labels = sitk.GetArrayFromImage(mask)
    if labels.dtype.kind == 'f':
        fractional = labels[labels != np.round(labels)]
        if fractional.size:
            raise UserError('%s: holds fractional values (e.g. %g); a mask volume holds whole-number labels (0: '
                            'no nodule), not probabilities' % (path, fractional.flat[0]))
    binary = sitk.GetImageFromArray((labels != 0).astype(np.uint8))
    binary.CopyInformation(mask)
    return binary


def _numbers(values_):
    return '(%s)' % ', '.join('%g' % v for v in values_)


# ----------------------------------------------------------------------------------------------------------------
# Geometry and intensities


def slice_spacing(image):
    """Spacing of the scan axis closest to the patient's z (head-foot) axis: the distance between neighbours."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)  # columns are the axes in LPS
    return image.GetSpacing()[int(np.argmax(np.abs(direction[2])))]


def _inside(image, point):
    """Whether a world point lies in the scan (within half a voxel of its outer voxel centres), and its index."""
    index = image.TransformPhysicalPointToContinuousIndex([float(v) for v in point])
    size = image.GetSize()
    return all(-0.5 <= i <= n - 0.5 for i, n in zip(index, size)), index


def nodule_planes(image, point, spacing=0.7, slices=1, resolution=64):
    """HU planes float32 [K, resolution, resolution] around a world point (mm, LPS); see the module docstring.

    K <= `slices`: neighbour planes lying wholly beyond the first or last slice of the scan are left out.
    Raises RowSkipped when the point itself is outside the scan.
    """
    resampler, keep = _plane_grid(image, point, spacing, slices, resolution)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(AIR_HU)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampler.Execute(image))[keep]  # [z, y, x]


def mask_planes(mask, image, point, spacing=0.7, slices=1, resolution=64):
    """uint8 [K, resolution, resolution] (255 nodule, 0 not) of a binary uint8 `mask` volume on the grid of the
    scan `image`: the planes nodule_planes cuts from the scan, by nearest-neighbour interpolation (0 outside)."""
    resampler, keep = _plane_grid(image, point, spacing, slices, resolution)
    resampler.SetInterpolator(sitk.sitkNearestNeighbor)
    resampler.SetDefaultPixelValue(0)
    resampler.SetOutputPixelType(sitk.sitkUInt8)
    return np.where(sitk.GetArrayFromImage(resampler.Execute(mask))[keep] > 0, 255, 0).astype(np.uint8)


def _plane_grid(image, point, spacing, slices, resolution):
    """The resampler onto the patch grid around `point` (interpolation still to be set) and the indices of the
    planes that lie in the scan; RowSkipped when the point is outside it."""
    inside, index = _inside(image, point)
    if not inside:
        raise RowSkipped(SKIP_OUTSIDE, 'nodule at (%s) mm lies outside the scan (voxel index %s; scan size %s)'
                         % (', '.join('%g' % v for v in point), ', '.join('%.1f' % v for v in index),
                            ' x '.join(str(n) for n in image.GetSize())))
    z_spacing = slice_spacing(image)
    half_width = (resolution - 1) / 2.0 * spacing
    half_depth = (slices - 1) / 2.0 * z_spacing
    origin = (point[0] - half_width, point[1] - half_width, point[2] - half_depth)

    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([resolution, resolution, slices])
    resampler.SetOutputSpacing([float(spacing), float(spacing), float(z_spacing)])
    resampler.SetOutputOrigin([float(v) for v in origin])
    resampler.SetOutputDirection([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    plane_centres = [(point[0], point[1], origin[2] + k * z_spacing) for k in range(slices)]
    keep = [k for k, centre in enumerate(plane_centres) if _inside(image, centre)[0]]
    return resampler, keep


def window_hu(hu, window=(-1350.0, 150.0)):
    """Hounsfield units -> uint8 grey levels: `window` (low, high) maps linearly onto 0..255, clipped."""
    low, high = float(window[0]), float(window[1])
    grey = np.rint((np.asarray(hu, dtype=np.float64) - low) / (high - low) * 255.0)
    return np.clip(grey, 0, 255).astype(np.uint8)


def augment_planes(planes, augment=False):
    """[K, H, W] -> [K * multiplier, H, W]: every plane followed by its AUGMENTATIONS when `augment` is set."""
    variants = AUGMENTATIONS if augment else AUGMENTATIONS[:1]
    return np.stack([function(plane) for plane in planes for _, function in variants])


# ----------------------------------------------------------------------------------------------------------------
# The whole conversion


def check_parameters(spacing, window, slices, resolution):
    """Refuse patch settings outside the ranges above, before any scan is read."""
    if not (MIN_SPACING_MM <= spacing <= MAX_SPACING_MM):  # also refuses NaN
        raise UserError('--spacing must be from %g to %g mm, got %g' % (MIN_SPACING_MM, MAX_SPACING_MM, spacing))
    if len(window) != 2 or not all(math.isfinite(v) for v in window) or not window[0] < window[1]:
        raise UserError('--window needs LOW < HIGH in Hounsfield units, got %s'
                            % ' '.join('%g' % v for v in window))
    if not 1 <= slices <= MAX_SLICES:
        raise UserError('--slices must be from 1 to %d, got %d' % (MAX_SLICES, slices))
    if not values.is_power_of_two(resolution, MIN_RESOLUTION, MAX_RESOLUTION):
        raise UserError('--resolution must be a power of two from %d to %d, got %d'
                        % (MIN_RESOLUTION, MAX_RESOLUTION, resolution))


def _plural(count, word, plural=None):
    return '%d %s' % (count, word if count == 1 else plural or word + 's')


def patches_from_ct(scans, annotations, label=None, spacing=0.7, window=(-1350.0, 150.0), slices=1, augment=False,
                    resolution=64, progress=progress_reports.quiet):
    """CT scans + nodule CSV -> (images uint8 [N, 1, res, res], labels float32 [N, classes] or None,
    groups int64 [N], metadata); see patches_and_masks_from_ct."""
    return patches_and_masks_from_ct(scans, annotations, None, label, spacing, window, slices, augment, resolution,
                                     progress)[:4]


def patches_and_masks_from_ct(scans, annotations, masks=None, label=None, spacing=0.7, window=(-1350.0, 150.0),
                              slices=1, augment=False, resolution=64, progress=progress_reports.quiet):
    """CT scans + nodule CSV -> (images uint8 [N, 1, res, res], labels float32 [N, classes] or None,
    groups int64 [N] (which nodule, i.e. which used CSV row, each patch comes from), metadata).

    Labels are one-hot over the sorted label values of the rows that gave patches, when the CSV has a label
    column and `label` is None (with `label`, only rows with that label are used and no labels are returned).
    Rows that cannot be used are reported one line each on stderr; a summary line goes to stdout.
    Raises UserError when the CSV is unusable or no patch at all could be made.  `progress`: a progress factory
    (nodules/util/progress.py) for the scans read.  `masks`: a folder of mask volumes (see the module
    docstring), whose patches come fifth, uint8 [N, res, res] 0/255 (None without `masks`).
    """
    check_parameters(spacing, window, slices, resolution)
    window = (float(window[0]), float(window[1]))
    check_folder_exists(scans, 'folder of CT scans', missing='no such scans folder')
    nodules, skipped, label_column, other_label_rows = read_annotations(annotations, label=label)
    total_rows = len(nodules) + len(skipped) + other_label_rows
    multiplier = len(AUGMENTATIONS) if augment else 1
    most_pixels = len(nodules) * slices * multiplier * resolution * resolution
    if most_pixels > MAX_TOTAL_PIXELS:
        raise UserError('%s: %d nodules x %d slices x %d augmentations of %dx%d pixels would need %.1f GB; '
                        'lower --resolution or --slices, or split the nodule list'
                        % (annotations, len(nodules), slices, multiplier, resolution, resolution,
                           most_pixels * 4 / 1e9))

    # One scan at a time, in order of first appearance, so each volume is read once and memory holds only one.
    by_scan = OrderedDict()
    for nodule in nodules:
        by_scan.setdefault(nodule.seriesuid, []).append(nodule)
    try:
        with itk_quiet():  # GDCM warns about every folder without DICOM files
            sources, notes = find_scans(scans, by_scan)
    except RuntimeError as error:
        raise UserError('%s: cannot look for scans here (%s)' % (scans, _itk_reason(error)))
    mask_paths = find_mask_volumes(masks, set(uid for uid in by_scan if uid in sources)) if masks else {}
    planes_by_row, scan_by_row, scans_used, planes_dropped = {}, {}, 0, 0
    masks_by_row, mask_by_row = {}, {}
    with progress(len(by_scan), 'reading CT scans', unit='scan') as bar:
        for uid, scan_nodules in by_scan.items():
            try:
                if uid not in sources:
                    raise RowSkipped(SKIP_NO_SCAN, notes.get(uid) or (
                        'seriesuid %s has no scan under %s (no %s.mhd/.mha/.nii/.nii.gz, DICOM series or folder '
                        'of that name)' % (uid, scans, uid)))
                with itk_quiet():  # MetaIO, for one, reports a missing data file on stderr besides raising
                    image = read_scan(sources[uid])
            except RowSkipped as skip:
                skipped.extend((nodule.row, skip.reason, skip.message) for nodule in scan_nodules)
                bar.update(1)
                continue
            mask = read_mask_volume(mask_paths[uid], image, sources[uid].path) if masks else None
            for nodule in scan_nodules:
                try:
                    with itk_quiet():
                        planes = nodule_planes(image, nodule.point, spacing=spacing, slices=slices,
                                               resolution=resolution)
                except RowSkipped as skip:
                    skipped.append((nodule.row, skip.reason, '%s: %s' % (sources[uid].path, skip.message)))
                    continue
                except RuntimeError as error:  # from ITK, e.g. a scan whose direction matrix is singular
                    skipped.append((nodule.row, SKIP_UNREADABLE, '%s: cannot be resampled around this nodule (%s)'
                                    % (sources[uid].path, _itk_reason(error))))
                    continue
                planes_by_row[nodule.row] = planes
                scan_by_row[nodule.row] = sources[uid].path
                if mask is not None:
                    masks_by_row[nodule.row] = mask_planes(mask, image, nodule.point, spacing=spacing,
                                                           slices=slices, resolution=resolution)
                    mask_by_row[nodule.row] = mask_paths[uid]
                planes_dropped += slices - len(planes)
            scans_used += any(nodule.row in planes_by_row for nodule in scan_nodules)
            del image, mask
            bar.update(1)

    for row, reason, message in sorted(skipped):
        print('%s row %d: %s' % (annotations, row, message), file=sys.stderr)
    used = [nodule for nodule in nodules if nodule.row in planes_by_row]
    if not used:
        raise UserError('%s: no patch could be made; all %s were skipped (see above)'
                            % (annotations, _plural(total_rows - other_label_rows, 'row')))

    patches = [augment_planes(planes_by_row[nodule.row], augment) for nodule in used]
    images = window_hu(np.concatenate(patches), window)[:, np.newaxis]
    mask_patches = None
    if masks:
        mask_patches = np.concatenate([augment_planes(masks_by_row[nodule.row], augment) for nodule in used])
    classes, labels = None, None
    if label_column is not None and label is None:
        classes = sorted(set(nodule.label for nodule in used))
        class_index = [classes.index(nodule.label) for nodule, block in zip(used, patches) for _ in block]
        labels = np.eye(len(classes), dtype=np.float32)[class_index]

    reasons = OrderedDict()
    for _, reason, _ in sorted(skipped, key=lambda item: item[1]):
        reasons[reason] = reasons.get(reason, 0) + 1
    summary = 'made %s (%dx%d) from %s in %s; %d of %s skipped' % (
        _plural(len(images), 'patch', 'patches'), resolution, resolution,
        _plural(len(used), 'nodule'), _plural(scans_used, 'scan'), len(skipped),
        _plural(total_rows, 'row'))
    if reasons:
        summary += ' (%s)' % ', '.join('%s: %d' % item for item in reasons.items())
    if other_label_rows:
        summary += '; %s with %s other than %s left out' % (_plural(other_label_rows, 'row'), label_column, label)
    if planes_dropped:
        summary += '; %s beyond the first/last slice left out' % _plural(planes_dropped, 'neighbour plane')
    print(summary)

    offsets = np.cumsum([0] + [len(block) for block in patches])
    groups = np.repeat(np.arange(len(used), dtype=np.int64), [len(block) for block in patches])
    metadata = OrderedDict([
        ('source', 'CT scans under %s, nodules from %s' % (os.path.abspath(scans), os.path.abspath(annotations))),
        ('annotations', os.path.abspath(annotations)),
        ('scans', os.path.abspath(scans)),
        ('window_hu', list(window)),
        ('windowing', 'grey = clip(rint((HU - low) / (high - low) * 255), 0, 255)'),
        ('spacing_mm', float(spacing)),
        ('slice_spacing', "each scan's own spacing along z"),
        ('slices', int(slices)),
        ('augment', bool(augment)),
        ('augmentations', [name for name, _ in AUGMENTATIONS[:multiplier]]),
        ('augment_multiplier', multiplier),
        ('resolution', int(resolution)),
        ('centre', 'nodule at continuous pixel ((res-1)/2, (res-1)/2), i.e. between the four middle pixels; '
                   'middle plane of the slices through the nodule'),
        ('orientation', 'LPS: columns towards patient left, rows towards posterior, planes towards superior'),
        ('interpolation', 'linear'),
        ('padding_hu', AIR_HU),
        ('label_column', label_column),
        ('label_filter', label),
        ('classes', classes),
        ('class_counts', None if labels is None else [int(n) for n in labels.sum(axis=0)]),
        ('counts', OrderedDict([
            ('patches', int(len(images))), ('nodules', len(used)), ('scans', scans_used), ('rows', total_rows),
            ('rows_skipped', len(skipped)), ('rows_skipped_by_reason', reasons),
            ('rows_with_other_label', other_label_rows), ('neighbour_planes_outside_scan', planes_dropped)])),
        ('nodules', [OrderedDict([
            ('group', i), ('row', nodule.row), ('seriesuid', nodule.seriesuid),
            ('scan', os.path.abspath(scan_by_row[nodule.row])),
            ('world_mm', list(nodule.point)),
            ('diameter_mm', nodule.diameter), ('label', nodule.label),
            ('patches', [int(offsets[i]), int(offsets[i + 1])])]) for i, nodule in enumerate(used)]),
    ])
    if masks:
        metadata['mask_folder'] = os.path.abspath(masks)
        metadata['mask_definition'] = ('every non-zero voxel of the mask volume named after the scan, cut on the patch '
                                       'grid by nearest-neighbour interpolation (0 outside the volume): 255 nodule, '
                                       '0 not')
        for record, nodule in zip(metadata['nodules'], used):
            record['mask_volume'] = os.path.abspath(mask_by_row[nodule.row])
    return images, labels, groups, metadata, mask_patches
