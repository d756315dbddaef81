"""nodules/data/ct_patches.py and `dataset_tool.py create_from_ct` on real volumes written by SimpleITK (no mocks).

The synthetic scans are small lung-like volumes (-850 HU) with a dense sphere (+50 HU) at a known world
position, written as a DICOM series, a MetaImage and a NIfTI file with a non-trivial origin, anisotropic
spacing and a flipped axis, so that a mistake in origin, spacing or direction handling moves the sphere.
"""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nodules.util.errors import UserError
from nodules.data import ct_patches
from conftest import assert_clean_failure, run_script

LUNG_HU, NODULE_HU = -850, 50
SIZE = (48, 48, 12)  # x, y, z voxels
SPACING = (0.6, 0.8, 2.5)  # mm
CENTRE_INDEX = (20.3, 22.7, 5.4)  # deliberately between voxel centres
RADIUS = 4.0  # mm
# Small markers 10 mm towards +x (patient left) and 12 mm towards +y (posterior) of the sphere: they pin down
# the patch orientation, which a centred symmetric sphere alone would not.
MARKER_X, MARKER_Y, MARKER_RADIUS = (10.0, 0.0, 0.0), (0.0, 12.0, 0.0), 2.0
MIDDLE = (64 - 1) / 2.0  # the nodule's pixel coordinate in a 64x64 patch (between pixels 31 and 32)
PIXEL_MM = 0.7

# Each format with the flips it can express: DICOM's slice axis follows from ImageOrientationPatient
# (row x column), so flipping x there also flips z.
GEOMETRY = {
    'mhd': ((120.3, -75.6, -210.0), (-1, 0, 0, 0, 1, 0, 0, 0, 1)),
    'nii.gz': ((-35.2, 140.9, 62.5), (-1, 0, 0, 0, 1, 0, 0, 0, 1)),
    'dicom': ((15.7, -20.1, -88.0), (-1, 0, 0, 0, 1, 0, 0, 0, -1)),
}


# ----------------------------------------------------------------------------------------------------------------
# Writing synthetic scans


def ct_volume(origin, direction, centre_index=CENTRE_INDEX, radius=RADIUS, markers=True, size=SIZE):
    """int16 HU volume with a sphere around `centre_index`; returns (image, world centre of the sphere)."""
    image = sitk.Image(list(size), sitk.sitkInt16)
    image.SetOrigin(origin)
    image.SetSpacing(SPACING)
    image.SetDirection([float(v) for v in direction])
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint(centre_index))
    index = np.indices(size[::-1], dtype=np.float64)[::-1]  # (i, j, k) arrays in [z, y, x] layout
    world = (np.asarray(origin)[:, None, None, None]
             + np.tensordot(np.reshape(direction, (3, 3)), index * np.reshape(SPACING, (3, 1, 1, 1)), axes=1))
    hu = np.full(size[::-1], LUNG_HU, dtype=np.int16)
    blobs = [(np.zeros(3), radius)]
    if markers:
        blobs += [(np.array(MARKER_X), MARKER_RADIUS), (np.array(MARKER_Y), MARKER_RADIUS)]
    for offset, blob_radius in blobs:
        distance = np.sqrt(((world - (centre + offset)[:, None, None, None]) ** 2).sum(axis=0))
        hu[distance <= blob_radius] = NODULE_HU
    volume = sitk.GetImageFromArray(hu)
    volume.CopyInformation(image)
    return volume, tuple(centre)


def write_dicom_series(image, folder, uid, modality='CT'):
    """One file per slice with the tags a scanner would write; HU stored with a rescale intercept."""
    os.makedirs(str(folder))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()
    orientation = (d[0], d[3], d[6], d[1], d[4], d[7])  # row and column direction cosines
    for k in range(image.GetSize()[2]):
        plane = image[:, :, k]
        tags = {
            '0008|0016': '1.2.840.10008.5.1.4.1.1.2',  # CT Image Storage
            '0008|0018': '%s.%d' % (uid, k + 1),
            '0008|0060': modality,
            '0020|000d': uid + '.0',
            '0020|000e': uid,
            '0020|0013': str(k + 1),
            '0020|0032': '\\'.join('%.6f' % v for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            '0020|0037': '\\'.join('%.6f' % v for v in orientation),
            '0028|0030': '%.6f\\%.6f' % (SPACING[1], SPACING[0]),  # row spacing (y), then column spacing (x)
            '0018|0050': '%.6f' % SPACING[2],
            '0028|1052': '-1024',  # ITK stores HU - intercept and the reader adds it back
            '0028|1053': '1',
            '0028|1054': 'HU',
        }
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(os.path.join(str(folder), 'slice%03d.dcm' % k))
        writer.Execute(plane)


def write_scan(image, scans_dir, uid, file_format):
    """Write `image` below `scans_dir` in one of the GEOMETRY formats; returns what to read it back with."""
    if file_format == 'dicom':
        folder = os.path.join(str(scans_dir), 'patient7', 'study1', 'series2')  # found by SeriesInstanceUID
        write_dicom_series(image, folder, uid)
        return sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid)
    folder = os.path.join(str(scans_dir), 'subset0')
    if not os.path.isdir(folder):
        os.makedirs(folder)
    path = os.path.join(folder, '%s.%s' % (uid, file_format))
    sitk.WriteImage(image, path)
    return path


def write_csv(path, rows, header=('seriesuid', 'coordX', 'coordY', 'coordZ', 'diameter_mm')):
    with open(str(path), 'w') as f:
        f.write(','.join(header) + '\n')
        for row in rows:
            f.write(','.join(str(value) for value in row) + '\n')
    return str(path)


def nodule_row(uid, centre, *extra):
    return (uid,) + tuple('%.4f' % v for v in centre) + (2 * RADIUS,) + extra


# ----------------------------------------------------------------------------------------------------------------
# Looking at patches


def grey(hu, window=(-1350.0, 150.0)):
    return int(ct_patches.window_hu(np.array([hu]), window)[0])


def sphere_centroid(patch, radius_mm=6.0):
    """Centroid (row, column) of the brightness above lung level within radius_mm of the patch middle."""
    rows, columns = np.indices(patch.shape)
    near = np.hypot(rows - MIDDLE, columns - MIDDLE) <= radius_mm / PIXEL_MM
    weight = np.clip(patch.astype(np.float64) - grey(LUNG_HU), 0, None) * near
    return (rows * weight).sum() / weight.sum(), (columns * weight).sum() / weight.sum()


def assert_centred(patch):
    middle = patch[31:33, 31:33]
    assert middle.min() > (grey(LUNG_HU) + grey(NODULE_HU)) / 2, 'the patch middle is not on the sphere'
    # Within a quarter pixel of 31.5: this also tells the documented convention from "pixel 32 is the centre".
    row, column = sphere_centroid(patch)
    assert abs(row - MIDDLE) < 0.25 and abs(column - MIDDLE) < 0.25, (row, column)


# ----------------------------------------------------------------------------------------------------------------
# Geometry in every format


@pytest.mark.parametrize('file_format', sorted(GEOMETRY))
def test_patch_is_centred_on_the_sphere_in_every_format(tmp_path, file_format, capsys):
    origin, direction = GEOMETRY[file_format]
    volume, centre = ct_volume(origin, direction)
    uid = '1.3.6.1.4.1.14519.5.2.1.%d' % len(file_format)
    written = write_scan(volume, tmp_path / 'scans', uid, file_format)
    # The file really carries the flipped axis (so the test exercises direction handling).
    assert sitk.ReadImage(written).GetDirection() == tuple(float(v) for v in direction)
    csv_path = write_csv(tmp_path / 'nodules.csv', [nodule_row(uid, centre)])

    images, labels, groups, metadata = ct_patches.patches_from_ct(str(tmp_path / 'scans'), csv_path)
    assert groups.dtype == np.int64 and groups.tolist() == [0]

    assert images.shape == (1, 1, 64, 64) and images.dtype == np.uint8 and labels is None
    patch = images[0, 0]
    assert_centred(patch)
    # Orientation: +x (patient left) to the right, +y (posterior) downwards, whatever the file's direction.
    middle = int(round(MIDDLE))
    marker_column = int(round(MIDDLE + MARKER_X[0] / PIXEL_MM))
    marker_row = int(round(MIDDLE + MARKER_Y[1] / PIXEL_MM))
    assert patch[middle, marker_column] == grey(NODULE_HU)
    assert patch[marker_row, middle] == grey(NODULE_HU)
    assert patch[middle, 63 - marker_column] == grey(LUNG_HU)
    assert patch[63 - marker_row, middle] == grey(LUNG_HU)
    # Windowing of the two tissue values (uniform regions, so interpolation cannot blur them).
    assert patch.max() == grey(NODULE_HU) == 238 and patch[middle, 20] == grey(LUNG_HU) == 85
    assert metadata['counts']['patches'] == 1 and metadata['counts']['scans'] == 1
    assert metadata['window_hu'] == [-1350.0, 150.0] and metadata['spacing_mm'] == 0.7
    assert 'made 1 patch (64x64) from 1 nodule in 1 scan; 0 of 1 row skipped' in capsys.readouterr().out
    json.dumps(metadata)  # JSON-able


def test_dicom_folder_named_after_the_uid(tmp_path):
    """A folder named <uid> stands for that series even when its SeriesInstanceUID differs (anonymised copies)."""
    origin, direction = GEOMETRY['dicom']
    volume, centre = ct_volume(origin, direction, markers=False)
    write_dicom_series(volume, tmp_path / 'scans' / 'case042', '2.25.99')
    csv_path = write_csv(tmp_path / 'nodules.csv', [nodule_row('case042', centre)])
    images, _, _, _ = ct_patches.patches_from_ct(str(tmp_path / 'scans'), csv_path)
    assert_centred(images[0, 0])


# ----------------------------------------------------------------------------------------------------------------
# Windowing, padding, slices, augmentation, labels


def test_windowing_maps_known_hu_to_grey_levels():
    hu = np.array([-3000, -1350, -600, 150, 2000])
    assert ct_patches.window_hu(hu).tolist() == [0, 0, 128, 255, 255]  # -600 is 127.5: rint rounds to even
    hu = np.array([-1200, -1000, -500, -250, 0, 300])
    assert ct_patches.window_hu(hu, window=(-1000, 0)).tolist() == [0, 0, 128, 191, 255, 255]
    assert ct_patches.window_hu(hu).dtype == np.uint8


def test_custom_window_reaches_the_patches(tmp_path, capsys):
    volume, centre = ct_volume(*GEOMETRY['mhd'], markers=False)
    write_scan(volume, tmp_path / 'scans', 'a', 'mhd')
    csv_path = write_csv(tmp_path / 'nodules.csv', [nodule_row('a', centre)])
    images, _, _, metadata = ct_patches.patches_from_ct(str(tmp_path / 'scans'), csv_path, window=(-1000, 0))
    assert set(np.unique(images[0, 0, 30:34, 30:34])) == {255}  # +50 HU is above the window
    assert images[0, 0, 31, 10] == 38  # -850 HU: 150 / 1000 * 255 = 38.25
    assert images[0, 0, 0, 0] == 0  # outside the scan: -1000 HU, the bottom of this window
    assert metadata['window_hu'] == [-1000.0, 0.0]


def test_border_patches_are_padded_with_air_not_shifted(tmp_path):
    """A nodule 5 mm from the scan's edge: the part of the patch beyond the edge is air, the sphere stays centred."""
    origin, direction = GEOMETRY['mhd']
    radius = 3.0
    centre_index = (5.0 / SPACING[0], 24.3, 6.2)  # 5 mm from the x = origin face (x is flipped: patient left)
    volume, centre = ct_volume(origin, direction, centre_index=centre_index, radius=radius, markers=False)
    write_scan(volume, tmp_path / 'scans', 'edge', 'mhd')
    csv_path = write_csv(tmp_path / 'nodules.csv', [nodule_row('edge', centre)])
    patch = ct_patches.patches_from_ct(str(tmp_path / 'scans'), csv_path)[0][0, 0]

    # Where each pixel lies in the scan, in voxels, from the patch geometry documented in ct_patches.
    rows, columns = np.indices(patch.shape)
    x = centre[0] + (columns - MIDDLE) * PIXEL_MM
    y = centre[1] + (rows - MIDDLE) * PIXEL_MM
    index = np.array([volume.TransformPhysicalPointToContinuousIndex((float(a), float(b), centre[2]))
                      for a, b in zip(x.ravel(), y.ravel())]).reshape(patch.shape + (3,))
    size = np.array(SIZE)
    margin = 1.5  # voxels: keep clear of the half-voxel band where interpolation mixes scan and padding
    outside = ((index < -margin) | (index > size - 1 + margin)).any(axis=-1)
    inside = ((index > margin) & (index < size - 1 - margin)).all(axis=-1)
    assert outside.sum() > 500 and inside.sum() > 500  # both parts are substantial
    assert (patch[outside] == grey(-1000)).all()
    assert set(np.unique(patch[inside])) <= set(range(grey(LUNG_HU), grey(NODULE_HU) + 1))
    assert outside[31, 63] and not outside[31, 0]  # the air is on the patient-left side, where the edge is
    assert_centred(patch)


def test_neighbour_slices_and_augmentation(tmp_path, capsys):
    origin, direction = GEOMETRY['nii.gz']
    volume, centre = ct_volume(origin, direction, markers=False)
    # A second nodule in the first slice: its lower neighbour plane lies beyond the scan and is left out.
    low_centre = volume.TransformContinuousIndexToPhysicalPoint((24.0, 24.0, 0.2))
    write_scan(volume, tmp_path / 'scans', 'b', 'nii.gz')
    csv_path = write_csv(tmp_path / 'nodules.csv', [nodule_row('b', centre), nodule_row('b', low_centre)])
    scans = str(tmp_path / 'scans')

    single = ct_patches.patches_from_ct(scans, csv_path)[0]
    images, _, groups, metadata = ct_patches.patches_from_ct(scans, csv_path, slices=3, augment=True)

    assert metadata['augment_multiplier'] == 5 and metadata['slices'] == 3
    assert images.shape == ((3 + 2) * 5, 1, 64, 64)
    assert metadata['counts']['neighbour_planes_outside_scan'] == 1
    assert [n['patches'] for n in metadata['nodules']] == [[0, 15], [15, 25]]
    # One nodule per CSV row: its planes and their augmentations share its group.
    assert groups.tolist() == [0] * 15 + [1] * 10 and [n['group'] for n in metadata['nodules']] == [0, 1]
    middle_plane = images[5:10, 0]  # planes run inferior to superior, each followed by its augmentations
    np.testing.assert_array_equal(middle_plane[0], single[0, 0])
    np.testing.assert_array_equal(middle_plane[1], np.fliplr(single[0, 0]))
    for turns in (1, 2, 3):
        np.testing.assert_array_equal(middle_plane[1 + turns], np.rot90(single[0, 0], turns))
    for variant in middle_plane:
        assert_centred(variant)  # the centre convention survives flips and rotations exactly
    bright = [(images[k * 5, 0] > 160).sum() for k in range(3)]
    assert bright[0] < bright[1] > bright[2] > 0  # neighbours 2.5 mm away cut the sphere off-centre
    assert '1 neighbour plane beyond the first/last slice left out' in capsys.readouterr().out


def test_labels_one_hot_and_label_filter(tmp_path, capsys):
    volume, centre = ct_volume(*GEOMETRY['mhd'], markers=False)
    write_scan(volume, tmp_path / 'scans', 'c', 'mhd')
    header = ('seriesuid', 'coordX', 'coordY', 'coordZ', 'diameter_mm', 'subtype')
    csv_path = write_csv(tmp_path / 'nodules.csv', [nodule_row('c', centre, 'MIA'), nodule_row('c', centre, 'AIS'),
                                                    nodule_row('c', centre, 'MIA')], header=header)
    scans = str(tmp_path / 'scans')

    images, labels, groups, metadata = ct_patches.patches_from_ct(scans, csv_path)
    assert groups.tolist() == [0, 1, 2]   # three rows, three nodules, even at the same place
    assert metadata['classes'] == ['AIS', 'MIA'] and metadata['class_counts'] == [1, 2]
    assert labels.dtype == np.float32 and labels.tolist() == [[0, 1], [1, 0], [0, 1]]
    assert metadata['counts']['scans'] == 1 and metadata['counts']['nodules'] == 3

    images, labels, groups, metadata = ct_patches.patches_from_ct(scans, csv_path, label='AIS')
    assert groups.tolist() == [0]
    assert len(images) == 1 and labels is None and metadata['label_filter'] == 'AIS'
    assert '2 rows with subtype other than AIS left out' in capsys.readouterr().out

    with pytest.raises(UserError, match="no row has subtype 'IAC' \\(labels present: AIS, MIA\\)"):
        ct_patches.patches_from_ct(scans, csv_path, label='IAC')
    plain_csv = write_csv(tmp_path / 'plain.csv', [nodule_row('c', centre)])
    with pytest.raises(UserError, match='plain.csv: --label AIS needs a `label` or `subtype` column'):
        ct_patches.patches_from_ct(scans, plain_csv, label='AIS')


# ----------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize('content, problem', [
    (None, 'no such file'),
    ('', 'is empty'),
    ('seriesuid,x,y,z,diameter_mm\n1,2,3,4,5\n', 'missing column(s) coordX, coordY, coordZ'),
    ('seriesuid;coordX;coordY;coordZ;diameter_mm\n1;2;3;4;5\n', 'missing column(s) seriesuid, coordX'),
    ('seriesuid,coordX,coordY,coordZ,diameter_mm\n', 'has a header but no nodule rows'),
    (b'\x89PNG\r\n\x1a\n\xff\xfe\x00\x01', 'not a readable CSV text file'),
])
def test_unusable_csv_is_one_clear_error(tmp_path, content, problem):
    csv_path = str(tmp_path / 'nodules.csv')
    if content is not None:
        with open(csv_path, 'wb') as f:
            f.write(content if isinstance(content, bytes) else content.encode())
    os.makedirs(str(tmp_path / 'scans'))
    with pytest.raises(UserError) as error:
        ct_patches.patches_from_ct(str(tmp_path / 'scans'), csv_path)
    message = str(error.value)
    assert message.startswith(csv_path + ': ') and problem in message and '\n' not in message


@pytest.mark.parametrize('kind', ['directory', 'pipe', '/dev/zero', 'too large'])
def test_a_csv_that_would_hang_or_never_end_is_refused_at_once(tmp_path, kind):
    """A FIFO would block the reader for ever and /dev/zero never ends: both are refused before reading, by
    name; a regular file larger than the bound is refused by its size (a sparse file here: nothing is read)."""
    os.makedirs(str(tmp_path / 'scans'))
    csv_path = {'/dev/zero': '/dev/zero'}.get(kind, str(tmp_path / 'nodules.csv'))
    if kind == 'directory':
        os.mkdir(csv_path)
    elif kind == 'pipe':
        os.mkfifo(csv_path)
    elif kind == 'too large':
        with open(csv_path, 'wb') as f:
            f.truncate(ct_patches.MAX_ANNOTATIONS_BYTES + 1)
    with pytest.raises(UserError) as error:
        ct_patches.patches_from_ct(str(tmp_path / 'scans'), csv_path)
    expected = {'directory': 'is a directory, not a CSV file',
                'pipe': 'is not a regular file (a device, pipe or socket), not a CSV file',
                '/dev/zero': 'is not a regular file (a device, pipe or socket), not a CSV file',
                'too large': 'holds 67 MB; a nodule list of at most 67 MB is read'}[kind]
    assert str(error.value) == '%s: %s' % (csv_path, expected)


@pytest.mark.parametrize('kind', ['file', '/dev/null'])
def test_scans_that_are_not_a_folder_say_what_they_are(tmp_path, kind):
    csv_path = write_csv(tmp_path / 'nodules.csv', [('a', 1, 2, 3, 4)])
    scans = '/dev/null' if kind == '/dev/null' else csv_path
    with pytest.raises(UserError) as error:
        ct_patches.patches_from_ct(scans, csv_path)
    assert str(error.value) == '%s: is %s, not a folder of CT scans' % (
        scans, 'a device' if kind == '/dev/null' else 'a regular file')


def test_bad_parameters_and_missing_scans_folder(tmp_path):
    csv_path = write_csv(tmp_path / 'nodules.csv', [('a', 1, 2, 3, 4)])
    for kwargs, problem in [({'window': (150, -1350)}, '--window needs LOW < HIGH'),
                            ({'spacing': 0}, '--spacing must be from 0.01 to 10 mm'),
                            ({'spacing': float('nan')}, '--spacing must be from'),
                            ({'slices': 65}, '--slices must be from 1 to 64'),
                            ({'resolution': 48}, '--resolution must be a power of two'),
                            ({'resolution': 2048}, '--resolution must be a power of two from 4 to 1024')]:
        with pytest.raises(UserError, match=problem):
            ct_patches.patches_from_ct(str(tmp_path), csv_path, **kwargs)
    with pytest.raises(UserError, match='no-such-folder: no such scans folder'):
        ct_patches.patches_from_ct(str(tmp_path / 'no-such-folder'), csv_path)


def test_itk_messages_stay_off_stderr(tmp_path, capfd):
    """MetaIO reports a missing data file on the process's stderr besides raising; only our line may show."""
    scans = tmp_path / 'scans'
    volume, centre = ct_volume(*GEOMETRY['mhd'], markers=False)
    write_scan(volume, scans, 'good', 'mhd')
    with open(str(scans / 'nodata.mhd'), 'w') as f:
        f.write('ObjectType = Image\nNDims = 3\nDimSize = 8 8 4\nElementType = MET_SHORT\n'
                'ElementDataFile = nodata.raw\n')
    csv_path = write_csv(tmp_path / 'nodules.csv', [nodule_row('good', centre), nodule_row('nodata', centre)])
    images, _, _, _ = ct_patches.patches_from_ct(str(scans), csv_path, resolution=16)
    assert images.shape == (1, 1, 16, 16)
    err = capfd.readouterr().err
    assert err.splitlines() == [line for line in err.splitlines() if line.startswith(csv_path + ' row ')], err
    assert len(err.splitlines()) == 1 and 'nodata.mhd cannot be read' in err


def test_a_metaimage_whose_data_is_missing_or_short_says_so(tmp_path, capsys):
    """ITK reports "No such file" of a header whose data file exists but is truncated: the line says which file
    is short and by how much, or that the data file is missing."""
    scans = tmp_path / 'scans'
    volume, centre = ct_volume(*GEOMETRY['mhd'], markers=False)
    write_scan(volume, scans, 'good', 'mhd')
    for uid in ('short', 'nodata'):
        write_scan(volume, scans, uid, 'mhd')
    folder = scans / 'subset0'
    data = (folder / 'short.raw').read_bytes()
    (folder / 'short.raw').write_bytes(data[:len(data) // 2])
    os.remove(str(folder / 'nodata.raw'))
    rows = [nodule_row('good', centre), nodule_row('short', centre), nodule_row('nodata', centre)]
    csv_path = write_csv(tmp_path / 'nodules.csv', rows)
    images, _, _, _ = ct_patches.patches_from_ct(str(scans), csv_path, resolution=16)
    assert images.shape == (1, 1, 16, 16)
    lines = capsys.readouterr().err.strip().splitlines()
    dims = 'x'.join(str(n) for n in volume.GetSize())
    assert lines == [
        '%s row 3: %s cannot be read (its data file %s holds %d bytes but the %s voxels of MET_SHORT its header '
        'describes need %d: truncated)' % (csv_path, folder / 'short.mhd', folder / 'short.raw', len(data) // 2, dims,
                                           len(data)),
        '%s row 4: %s cannot be read (its data file %s does not exist)' % (csv_path, folder / 'nodata.mhd',
                                                                         folder / 'nodata.raw')]


def test_help_states_the_ranges_the_checks_enforce():
    text = ' '.join(run_script('dataset_tool.py', 'create_from_ct', '-h').stdout.split())
    assert '0.01 to 10' in text and '%g to %g' % (ct_patches.MIN_SPACING_MM, ct_patches.MAX_SPACING_MM) in text
    assert '1 to %d' % ct_patches.MAX_SLICES in text
    assert 'from %d to %d' % (ct_patches.MIN_RESOLUTION, ct_patches.MAX_RESOLUTION) in text


def write_bad_scans(scans_dir):
    """Files under `scans_dir` that must each be refused, keyed by the uid that names them."""
    os.makedirs(str(scans_dir))
    with open(os.path.join(str(scans_dir), 'garbage.mhd'), 'w') as f:
        f.write('this is not a MetaImage header\n')
    sitk.WriteImage(sitk.Image([16, 16], sitk.sitkInt16) - 1000, os.path.join(str(scans_dir), 'flat.nii.gz'))
    sitk.WriteImage(sitk.Image([8, 8, 4], sitk.sitkUInt8) + 128, os.path.join(str(scans_dir), 'photo.mhd'))
    sitk.WriteImage(sitk.Image([8, 8, 4], sitk.sitkVectorUInt8, 3), os.path.join(str(scans_dir), 'rgb.mha'))
    mr_volume, _ = ct_volume(*GEOMETRY['dicom'], markers=False, size=(8, 8, 3))
    write_dicom_series(mr_volume, os.path.join(str(scans_dir), 'mr'), '2.25.7', modality='MR')


def test_bad_rows_are_reported_and_the_rest_processed(tmp_path, capsys):
    volume, centre = ct_volume(*GEOMETRY['mhd'], markers=False)
    scans = tmp_path / 'scans'
    write_bad_scans(scans)
    write_scan(volume, scans, 'good', 'mhd')
    rows = [
        nodule_row('good', centre),                                  # row 2: fine
        ('good', 'abc', 1, 2, 8),                                    # row 3
        ('good', 1, 2),                                              # row 4: short row
        nodule_row('nosuch', centre),                                # row 5
        ('good', 500.0, 0.0, 0.0, 8),                                # row 6
        nodule_row('garbage', centre),                               # row 7
        nodule_row('flat', centre),                                  # row 8
        nodule_row('photo', centre),                                 # row 9
        nodule_row('2.25.7', centre),                                # row 10
        nodule_row('rgb', centre),                                   # row 11
        ('good', 1, 2, 3, 'nan'),                                    # row 12
    ]
    csv_path = write_csv(tmp_path / 'nodules.csv', rows)
    images, _, groups, metadata = ct_patches.patches_from_ct(str(scans), csv_path)
    assert groups.tolist() == [0]

    assert images.shape == (1, 1, 64, 64)
    assert_centred(images[0, 0])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    expected = {
        3: "coordX 'abc' is not a number",
        4: 'coordZ is missing; diameter_mm is missing',
        5: 'seriesuid nosuch has no scan under %s' % scans,
        6: 'nodule at (500, 0, 0) mm lies outside the scan',
        7: 'garbage.mhd cannot be read',
        8: 'flat.nii.gz is a 2-D image, not a 3-D CT volume',
        9: 'photo.mhd values 128..128 do not look like Hounsfield units',
        10: 'has modality MR, not CT',
        11: 'rgb.mha has 3 values per voxel, not a scalar CT volume',
        12: "diameter_mm 'nan' is not a finite number",
    }
    assert len(lines) == len(expected)
    for line, (row, text) in zip(lines, sorted(expected.items())):
        assert line.startswith('%s row %d: ' % (csv_path, row)) and text in line, line
    assert ('made 1 patch (64x64) from 1 nodule in 1 scan; 10 of 11 rows skipped (bad values: 3, no scan: 1, '
            'not a CT volume: 4, outside the scan: 1, unreadable scan: 1)') in captured.out
    assert metadata['counts']['rows_skipped'] == 10


def test_nothing_usable_is_an_error(tmp_path, capsys):
    scans = tmp_path / 'scans'
    write_bad_scans(scans)
    csv_path = write_csv(tmp_path / 'nodules.csv', [('nosuch', 1, 2, 3, 4), ('garbage', 1, 2, 3, 4)])
    with pytest.raises(UserError, match='nodules.csv: no patch could be made; all 2 rows were skipped'):
        ct_patches.patches_from_ct(str(scans), csv_path)
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


# ----------------------------------------------------------------------------------------------------------------
# The command line, end to end


def run_tool(*args):
    return run_script('dataset_tool.py', 'create_from_ct', *args)


def test_command_line_writes_a_dataset_despite_bad_rows(tmp_path):
    from nodules.data import dataset
    volume, centre = ct_volume(*GEOMETRY['nii.gz'])
    write_scan(volume, tmp_path / 'scans', 'good', 'nii.gz')
    csv_path = write_csv(tmp_path / 'nodules.csv', [nodule_row('good', centre), nodule_row('nosuch', centre),
                                                    ('good', 'x', 1, 2, 3)])
    out = tmp_path / 'ct'
    result = run_tool(out, '--scans', tmp_path / 'scans', '--annotations', csv_path, '--window', -1000, 200,
                      '--slices', 3, '--augment')

    assert result.returncode == 0, result.stderr
    assert 'Traceback' not in result.stderr
    assert 'nodules.csv row 3: seriesuid nosuch' in result.stderr and 'nodules.csv row 4: coordX' in result.stderr
    assert 'made 15 patches (64x64) from 1 nodule in 1 scan; 2 of 3 rows skipped' in result.stdout
    assert sorted(dataset.list_tfrecords(str(out))) == [2, 3, 4, 5, 6]
    images = dataset.read_images(dataset.tfrecord_path(str(out), 6))
    assert images.shape == (15, 1, 64, 64)
    assert_centred(images[5, 0])
    metadata = dataset.read_metadata(str(out))
    assert metadata['window_hu'] == [-1000.0, 200.0] and metadata['spacing_mm'] == 0.7
    assert metadata['annotations'] == os.path.abspath(csv_path)
    assert dataset.read_groups(str(out)).tolist() == [0] * 15   # one CSV row used: one nodule


@pytest.mark.parametrize('option, value, message', [
    ('--spacing', '1e-300', '--spacing must be from 0.01 to 10 mm, got 1e-300'),
    ('--slices', '100000000', '--slices must be from 1 to 64, got 100000000'),
    ('--resolution', '1048576', '--resolution must be a power of two from 4 to 1024, got 1048576'),
])
def test_command_line_refuses_settings_out_of_range_in_one_line(tmp_path, option, value, message):
    volume, centre = ct_volume(*GEOMETRY['mhd'], markers=False)
    write_scan(volume, tmp_path / 'scans', 'good', 'mhd')
    csv_path = write_csv(tmp_path / 'nodules.csv', [nodule_row('good', centre)])
    result = run_tool(tmp_path / 'out' / 'ct', '--scans', tmp_path / 'scans', '--annotations', csv_path,
                      option, value)
    assert_clean_failure(result, message)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == ['error: ' + message]
    assert sorted(os.listdir(str(tmp_path))) == ['nodules.csv', 'scans']


def test_command_line_writes_nothing_when_nothing_is_usable(tmp_path):
    os.makedirs(str(tmp_path / 'scans'))
    csv_path = write_csv(tmp_path / 'nodules.csv', [('nosuch', 1, 2, 3, 4), ('other', 'x', 2, 3, 4)])
    result = run_tool(tmp_path / 'out' / 'ct', '--scans', tmp_path / 'scans', '--annotations', csv_path)
    assert_clean_failure(result, 'no patch could be made')
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(csv_path + ' row 2: seriesuid nosuch has no scan')
    assert lines[1].startswith(csv_path + " row 3: coordX 'x' is not a number")
    assert lines[-1].startswith('error: %s: no patch could be made' % csv_path)
    assert not os.path.exists(str(tmp_path / 'out'))  # not even the parent folder or a staging folder

    result = run_tool(tmp_path / 'ct', '--scans', tmp_path / 'scans', '--annotations', tmp_path / 'missing.csv')
    assert_clean_failure(result)
    assert result.stderr.strip().splitlines() == ['error: %s: no such file' % (tmp_path / 'missing.csv')]
    assert sorted(os.listdir(str(tmp_path))) == ['nodules.csv', 'scans']


# ----------------------------------------------------------------------------------------------------------------
# Nodule masks: segmentation volumes on the scan's grid, cut into the same patches


def nodule_mask_volume(volume, centre, label=1, pixel_type=sitk.sitkUInt8):
    """The label map of the sphere alone (the markers are not nodule), on the scan's voxel grid."""
    size = volume.GetSize()
    index = np.indices(size[::-1], dtype=np.float64)[::-1]
    direction = np.reshape(volume.GetDirection(), (3, 3))
    world = (np.asarray(volume.GetOrigin())[:, None, None, None]
             + np.tensordot(direction, index * np.reshape(volume.GetSpacing(), (3, 1, 1, 1)), axes=1))
    inside = np.sqrt(((world - np.asarray(centre)[:, None, None, None]) ** 2).sum(axis=0)) <= RADIUS
    mask = sitk.Cast(sitk.GetImageFromArray((inside * label).astype(np.int32)), pixel_type)
    mask.CopyInformation(volume)
    return mask


def reference_mask_planes(mask, centre, slices, z_spacing, resolution=64, spacing=PIXEL_MM):
    """Independent nearest-neighbour lookup: each patch pixel's world point -> the scan voxel whose centre is
    nearest (index rounded half up), 0 outside the volume; 255 where the label is non-zero."""
    labels = sitk.GetArrayFromImage(mask)                               # [z, y, x]
    direction = np.reshape(mask.GetDirection(), (3, 3))
    offsets = (np.arange(resolution) - (resolution - 1) / 2.0) * spacing
    planes = []
    for k in range(slices):
        z = centre[2] + (k - (slices - 1) / 2.0) * z_spacing
        ys, xs = np.meshgrid(centre[1] + offsets, centre[0] + offsets, indexing='ij')
        points = np.stack([xs, ys, np.full(xs.shape, z)])             # [3, rows, columns]
        index = np.tensordot(direction.T, points - np.asarray(mask.GetOrigin())[:, None, None], axes=1)
        index = np.floor(index / np.reshape(mask.GetSpacing(), (3, 1, 1)) + 0.5).astype(int)
        size = np.reshape(mask.GetSize(), (3, 1, 1))
        inside = ((index >= 0) & (index < size)).all(axis=0)
        i, j, l = [np.where(inside, v, 0) for v in index]
        planes.append(np.where(inside & (labels[l, j, i] != 0), 255, 0).astype(np.uint8))
    return np.stack(planes)


@pytest.mark.parametrize('scan_format, mask_format', [('mhd', 'nii.gz'), ('nii.gz', 'mhd')])
def test_mask_patches_are_the_nearest_voxels_of_the_label_map(tmp_path, capsys, scan_format, mask_format):
    origin, direction = GEOMETRY[scan_format]
    volume, centre = ct_volume(origin, direction)
    write_scan(volume, tmp_path / 'scans', 'scan1', scan_format)
    os.makedirs(str(tmp_path / 'masks' / 'deep'))
    mask = nodule_mask_volume(volume, centre, label=300, pixel_type=sitk.sitkUInt16)   # any non-zero label
    sitk.WriteImage(mask, str(tmp_path / 'masks' / 'deep' / ('scan1.' + mask_format)))
    csv_path = write_csv(tmp_path / 'nodules.csv', [nodule_row('scan1', centre)])

    images, _, groups, metadata, masks = ct_patches.patches_and_masks_from_ct(
        str(tmp_path / 'scans'), csv_path, masks=str(tmp_path / 'masks'), slices=3, augment=True)
    assert masks.dtype == np.uint8 and masks.shape == (15, 64, 64) and len(images) == 15
    reference = reference_mask_planes(mask, centre, 3, SPACING[2])
    assert reference[1].sum() > 0 and reference[1].sum() > reference[0].sum()   # the sphere, widest in the middle
    for plane in range(3):
        np.testing.assert_array_equal(masks[plane * 5], reference[plane])
        for variant, (_, function) in enumerate(ct_patches.AUGMENTATIONS):
            np.testing.assert_array_equal(masks[plane * 5 + variant], function(masks[plane * 5]))
            np.testing.assert_array_equal(images[plane * 5 + variant, 0], function(images[plane * 5, 0]))
    # the mask lies on the bright sphere of the patch (the images are interpolated linearly, so its edge may
    # differ by a pixel), and the markers stay outside it
    rows, columns = np.indices((64, 64))
    near = np.hypot(rows - MIDDLE, columns - MIDDLE) <= 6.0 / PIXEL_MM
    bright, mask = (images[5, 0] > (grey(LUNG_HU) + grey(NODULE_HU)) / 2) & near, masks[5] > 0
    assert 2.0 * (bright & mask).sum() / (bright.sum() + mask.sum()) > 0.85
    assert not (mask & ~near).any() and (images[5, 0] > (grey(LUNG_HU) + grey(NODULE_HU)) / 2)[~near].any()
    assert metadata['nodules'][0]['mask_volume'].endswith('scan1.' + mask_format)
    assert 'nearest-neighbour' in metadata['mask_definition'] and metadata['mask_folder'] == str(tmp_path / 'masks')
    # without masks the same call gives the same images
    same = ct_patches.patches_from_ct(str(tmp_path / 'scans'), csv_path, slices=3, augment=True)
    np.testing.assert_array_equal(same[0], images)


def test_create_from_ct_writes_the_masks_file(tmp_path):
    from nodules.data import dataset
    volume, centre = ct_volume(*GEOMETRY['mhd'])
    write_scan(volume, tmp_path / 'scans', 'scan1', 'mhd')
    os.makedirs(str(tmp_path / 'masks'))
    sitk.WriteImage(nodule_mask_volume(volume, centre), str(tmp_path / 'masks' / 'scan1.nii'))
    csv_path = write_csv(tmp_path / 'nodules.csv', [nodule_row('scan1', centre)])
    result = run_tool(tmp_path / 'ct', '--scans', tmp_path / 'scans', '--annotations', csv_path,
                      '--masks', tmp_path / 'masks', '--resolution', 16)
    assert result.returncode == 0, result.stderr
    assert 'and their nodule masks' in result.stdout
    masks = dataset.read_masks(str(tmp_path / 'ct'))
    reference = reference_mask_planes(nodule_mask_volume(volume, centre), centre, 1, SPACING[2], resolution=16,
                                      spacing=PIXEL_MM)
    np.testing.assert_array_equal(masks, reference)


def shifted_origin(volume, centre):
    mask = nodule_mask_volume(volume, centre)
    mask.SetOrigin([v + 0.5 for v in mask.GetOrigin()])
    return mask, 'its origin (120.8, -75.1, -209.5) differs from the scan'


def other_size(volume, centre):
    return nodule_mask_volume(volume, centre)[:, :, :6], 'its size (48, 48, 6) differs from the scan'


def other_spacing(volume, centre):
    mask = nodule_mask_volume(volume, centre)
    mask.SetSpacing([0.6, 0.8, 2.0])
    return mask, 'its spacing (0.6, 0.8, 2) differs from the scan'


def fractional(volume, centre):
    mask = sitk.Cast(nodule_mask_volume(volume, centre), sitk.sitkFloat32) * 0.25
    return mask, 'holds fractional values (e.g. 0.25); a mask volume holds whole-number labels'


def two_dimensional(volume, centre):
    return nodule_mask_volume(volume, centre)[:, :, 5], 'is a 2-D image with 1 value(s) per voxel'


BAD_MASK_VOLUMES = [shifted_origin, other_size, other_spacing, fractional, two_dimensional]


@pytest.mark.parametrize('make', BAD_MASK_VOLUMES, ids=[f.__name__ for f in BAD_MASK_VOLUMES])
def test_a_mask_volume_off_the_scans_grid_is_one_line_naming_it(tmp_path, make):
    volume, centre = ct_volume(*GEOMETRY['mhd'])
    scan = write_scan(volume, tmp_path / 'scans', 'scan1', 'mhd')
    mask, fragment = make(volume, centre)
    os.makedirs(str(tmp_path / 'masks'))
    mask_path = str(tmp_path / 'masks' / 'scan1.nii.gz')
    sitk.WriteImage(mask, mask_path)
    csv_path = write_csv(tmp_path / 'nodules.csv', [nodule_row('scan1', centre)])
    result = run_tool(tmp_path / 'ct', '--scans', tmp_path / 'scans', '--annotations', csv_path,
                      '--masks', tmp_path / 'masks')
    assert_clean_failure(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: %s: ' % mask_path) and fragment in lines[0], lines
    if 'differs' in fragment:
        assert scan in lines[0]
    assert sorted(os.listdir(str(tmp_path))) == ['masks', 'nodules.csv', 'scans']


def test_a_scan_without_a_mask_volume_is_named(tmp_path):
    volume, centre = ct_volume(*GEOMETRY['mhd'])
    write_scan(volume, tmp_path / 'scans', 'scan1', 'mhd')
    os.makedirs(str(tmp_path / 'masks'))
    sitk.WriteImage(nodule_mask_volume(volume, centre), str(tmp_path / 'masks' / 'scan2.nii.gz'))
    csv_path = write_csv(tmp_path / 'nodules.csv', [nodule_row('scan1', centre)])
    result = run_tool(tmp_path / 'ct', '--scans', tmp_path / 'scans', '--annotations', csv_path,
                      '--masks', tmp_path / 'masks')
    assert result.stderr.strip().splitlines() == [
        'error: %s: no mask volume for the scan scan1 (expected scan1.nii.gz, .nii, .mhd or .mha below it)'
        % (tmp_path / 'masks')]
    missing = run_tool(tmp_path / 'ct', '--scans', tmp_path / 'scans', '--annotations', csv_path,
                       '--masks', tmp_path / 'nowhere')
    assert missing.stderr.strip().splitlines() == ['error: %s: no such masks folder' % (tmp_path / 'nowhere')]
