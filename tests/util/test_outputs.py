"""nodules/util/outputs.py: all-or-nothing file sets, atomic single files, 8-bit conversion, mosaics and PNGs."""
import os
import json
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from nodules.util import cli
from nodules.util.errors import UserError
from conftest import ROOT, directory_contents as listing
from nodules.util import outputs


def read_png(path):
    with Image.open(path) as image:
        image.load()
        return image.mode, np.array(image)


def contains_tile(mosaic, tile):
    """Whether `tile` appears somewhere in `mosaic` as a contiguous block."""
    h, w = tile.shape[:2]
    return any(np.array_equal(mosaic[y:y + h, x:x + w], tile)
               for y in range(mosaic.shape[0] - h + 1) for x in range(mosaic.shape[1] - w + 1))


# ---------------------------------------------------------------------------------------------------------------
# FileSet: all files or none


def write_set(files, overwrite=False):
    """Write {path: bytes} as one FileSet."""
    with outputs.FileSet(list(files), overwrite) as staged:
        for path, data in files.items():
            staged.write(path, data)


def test_file_set_commits_together(tmp_path):
    out = tmp_path / 'a' / 'b'   # created, parents too
    one, two = str(out / 'one.bin'), str(out / 'two.bin')
    with outputs.FileSet([one, two]) as staged:
        staged.write(one, b'1')
        staged.write(two, b'22')
        assert not os.path.exists(one)   # nothing lands before the end
    assert listing(str(out)) == {'one.bin': b'1', 'two.bin': b'22'}


def test_file_set_spanning_two_folders(tmp_path):
    write_set({str(tmp_path / 'x' / 'one.bin'): b'1', str(tmp_path / 'y' / 'z' / 'two.bin'): b'2'})
    assert listing(str(tmp_path)) == {'x/': None, 'y/': None, 'y/z/': None, 'x/one.bin': b'1', 'y/z/two.bin': b'2'}


def test_file_set_error_inside_block_writes_nothing_and_removes_the_folders_it_made(tmp_path):
    out = tmp_path / 'new' / 'deeper'
    with pytest.raises(RuntimeError):
        with outputs.FileSet([str(out / 'one.bin'), str(out / 'two.bin')]) as staged:
            staged.write(str(out / 'one.bin'), b'1')
            raise RuntimeError('boom')
    assert listing(str(tmp_path)) == {}


def test_file_set_identical_existing_files_are_left_alone(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'one.bin').write_bytes(b'1')
    before = os.stat(str(out / 'one.bin'))
    write_set({str(out / 'one.bin'): b'1', str(out / 'two.bin'): b'2'})
    assert listing(str(out)) == {'one.bin': b'1', 'two.bin': b'2'}
    after = os.stat(str(out / 'one.bin'))
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)   # not even rewritten


def test_file_set_differing_existing_file_stops_everything(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'two.bin').write_bytes(b'old')
    (out / 'other.txt').write_bytes(b'keep')
    before = listing(str(out))
    with pytest.raises(UserError) as error:
        write_set({str(out / 'one.bin'): b'1', str(out / 'two.bin'): b'new', str(out / 'three.bin'): b'3'})
    assert os.path.join(str(out), 'two.bin') in str(error.value)
    assert 'nothing was written' in str(error.value)
    assert listing(str(out)) == before


def test_file_set_overwrite_replaces(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'two.bin').write_bytes(b'old')
    (out / 'other.txt').write_bytes(b'keep')
    write_set({str(out / 'one.bin'): b'1', str(out / 'two.bin'): b'new'}, overwrite=True)
    assert listing(str(out)) == {'one.bin': b'1', 'two.bin': b'new', 'other.txt': b'keep'}


@pytest.mark.parametrize('overwrite', [False, True])
def test_file_set_directory_in_the_way_is_refused_before_anything_changes(tmp_path, overwrite):
    out = tmp_path / 'out'
    (out / 'b.bin').mkdir(parents=True)
    (out / 'a.bin').write_bytes(b'old a')
    (out / 'c.bin').write_bytes(b'old c')
    before = listing(str(out))
    with pytest.raises(UserError) as error:
        write_set({str(out / name): b'new' for name in ('a.bin', 'b.bin', 'c.bin')}, overwrite=overwrite)
    assert 'b.bin' in str(error.value) and 'directory' in str(error.value)
    assert listing(str(out)) == before


@pytest.mark.parametrize('case', ['trailing slash', 'named twice', 'under a file', 'special file'])
def test_file_set_targets_that_can_never_be_written(tmp_path, case):
    (tmp_path / 'file').write_bytes(b'x')
    paths = [str(tmp_path / 'out' / 'one.bin')]
    if case == 'trailing slash':
        paths.append(str(tmp_path / 'out' / 'two') + '/')
    elif case == 'named twice':
        paths.append(str(tmp_path / 'out' / '.' / 'one.bin'))
    elif case == 'under a file':
        paths.append(str(tmp_path / 'file' / 'two.bin'))
    else:
        os.mkfifo(str(tmp_path / 'fifo'))   # opening it to compare contents would block forever
        paths.append(str(tmp_path / 'fifo'))
    before = sorted(os.listdir(str(tmp_path)))   # names only: reading the fifo would block
    with pytest.raises(UserError) as error:
        outputs.FileSet(paths)
    assert paths[1] in str(error.value)
    assert sorted(os.listdir(str(tmp_path))) == before   # not even the output folder was made
    assert (tmp_path / 'file').read_bytes() == b'x'


def stage_of(folder):
    """This process's staging folder for `folder`: inside it (files landing one by one) or beside it (a folder
    landing whole)."""
    folder = str(folder)
    prefix = '.%s.nodules-%d-' % (os.path.basename(folder), os.getpid())
    found = [os.path.join(where, name) for where in (folder, os.path.dirname(folder)) if os.path.isdir(where)
             for name in os.listdir(where) if name.startswith(prefix)]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize('others', [False, True])
def test_file_set_commit_failure_puts_back_what_was_replaced(tmp_path, others):
    """A rename that fails half-way (here: staged files removed behind the set's back) restores the old files,
    whether the folders were being swapped whole or their files replaced one by one."""
    first, second = tmp_path / 'first', tmp_path / 'second'
    first.mkdir()
    second.mkdir()
    (first / 'a.bin').write_bytes(b'old a')
    (second / 'b.bin').write_bytes(b'old b')
    if others:
        (second / 'other.txt').write_bytes(b'keep')
    before = listing(str(tmp_path))
    with pytest.raises(UserError) as error:
        with outputs.FileSet([str(first / 'a.bin'), str(second / 'b.bin')], overwrite=True) as staged:
            staged.write(str(first / 'a.bin'), b'new a')
            staged.write(str(second / 'b.bin'), b'new b')
            shutil.rmtree(os.path.join(stage_of(second), 'new'))
    assert 'nothing was changed' in str(error.value)
    assert listing(str(tmp_path)) == before   # a.bin is old again, and no staging folder is left


def test_staging_folders_are_hidden_marked_and_carry_the_process_id(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'notes.txt').write_bytes(b'the user\'s')
    with outputs.FileSet([str(out / 'one.bin')]) as staged:
        staged.write(str(out / 'one.bin'), b'1')
        stage = stage_of(out)
        assert os.path.dirname(stage) == str(out)   # lands among the user's files: staged inside the folder
        assert sorted(os.listdir(stage)) == ['.nodules-stage', 'new'] and os.listdir(stage + '/new') == ['one.bin']
        with open(os.path.join(stage, '.nodules-stage')) as f:
            assert json.load(f)['stage'] == os.path.basename(stage)
    assert sorted(os.listdir(str(out))) == ['notes.txt', 'one.bin']


def test_file_set_overwrite_swaps_a_folder_holding_only_its_files(tmp_path):
    """A folder that holds nothing but files of the set is replaced whole (one exchange of two names); one that
    holds anything else keeps its identity and its other files."""
    only, mixed = tmp_path / 'only', tmp_path / 'mixed'
    for folder in (only, mixed):
        folder.mkdir()
        (folder / 'a.bin').write_bytes(b'old a')
        (folder / 'b.bin').write_bytes(b'same b')
    (mixed / 'notes.txt').write_bytes(b'keep')
    inodes = dict((folder, os.stat(str(folder)).st_ino) for folder in (only, mixed))
    for folder in (only, mixed):
        write_set({str(folder / 'a.bin'): b'new a', str(folder / 'b.bin'): b'same b', str(folder / 'c.bin'): b'c'},
                  overwrite=True)
    assert listing(str(only)) == {'a.bin': b'new a', 'b.bin': b'same b', 'c.bin': b'c'}
    assert listing(str(mixed)) == {'a.bin': b'new a', 'b.bin': b'same b', 'c.bin': b'c', 'notes.txt': b'keep'}
    assert os.stat(str(only)).st_ino != inodes[only] and os.stat(str(mixed)).st_ino == inodes[mixed]
    assert sorted(os.listdir(str(tmp_path))) == ['mixed', 'only']


def test_file_set_swap_without_an_atomic_exchange(tmp_path, monkeypatch):
    """Where the file system cannot exchange two names, the swap takes two renames and still lands whole."""
    monkeypatch.setattr(outputs, '_renameat2', None)
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'a.bin').write_bytes(b'old a')
    write_set({str(out / 'a.bin'): b'new a', str(out / 'b.bin'): b'b'}, overwrite=True)
    assert listing(str(tmp_path)) == {'out/': None, 'out/a.bin': b'new a', 'out/b.bin': b'b'}


def test_check_outdir_does_not_create_anything(tmp_path):
    outputs.check_outdir(str(tmp_path / 'new' / 'deeper'))
    assert os.listdir(str(tmp_path)) == []
    (tmp_path / 'file').write_bytes(b'x')
    with pytest.raises(UserError):
        outputs.check_outdir(str(tmp_path / 'file'))
    with pytest.raises(UserError):
        outputs.check_outdir(str(tmp_path / 'file' / 'sub'))


# ---------------------------------------------------------------------------------------------------------------
# Two writers: what another command makes between this one's checks and its commit is never replaced


def other_writer(path, data=b'the other run'):
    """What another command does meanwhile: writes its own file (and its folder)."""
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    with open(path, 'wb') as f:
        f.write(data)


@pytest.mark.parametrize('case', ['new file among others', 'new folder', 'replaced file', 'file added to a swap'])
def test_what_another_writer_made_meanwhile_stops_the_commit(tmp_path, case):
    out = tmp_path / 'out'
    if case != 'new folder':
        out.mkdir()
        (out / 'a.bin').write_bytes(b'old a')
        if case == 'new file among others':
            (out / 'notes.txt').write_bytes(b'keep')
    with pytest.raises(UserError) as error:
        with outputs.FileSet([str(out / 'a.bin'), str(out / 'b.bin')], overwrite=True) as staged:
            staged.write(str(out / 'a.bin'), b'new a')
            staged.write(str(out / 'b.bin'), b'new b')
            expected = listing(str(tmp_path))
            other = {'new file among others': 'b.bin', 'new folder': 'b.bin', 'replaced file': 'a.bin',
                     'file added to a swap': 'c.bin'}[case]
            other_writer(str(out / other))
            expected[os.path.join('out', other)] = b'the other run'
            expected = dict((key, value) for key, value in expected.items() if '.nodules-' not in key)
            if case == 'new folder':
                expected['out/'] = None
    message = str(error.value)
    assert str(out) in message and 'by another command while this one ran' in message, message
    assert message.endswith('it is left as it is and nothing was written')
    assert listing(str(tmp_path)) == expected   # the other run's file as it made it, ours nowhere


def test_an_output_folder_made_meanwhile_is_left_to_its_maker(tmp_path):
    out = str(tmp_path / 'AIS')
    with pytest.raises(UserError) as error:
        with outputs.OutputFolder(out, lambda name: name.endswith('.bin'), kind='dataset') as folder:
            with open(folder.path('a.bin'), 'wb') as f:
                f.write(b'ours')
            other_writer(os.path.join(out, 'a.bin'))
    assert str(error.value) == '%s: was created by another command while this one ran; it is left as it is and ' \
                               'nothing was written' % out
    assert listing(str(tmp_path)) == {'AIS/': None, 'AIS/a.bin': b'the other run'}


# Holds an exclusive lock on the folder argv[1] (as a command committing there does) until its stdin closes.
LOCK_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print('locked', flush=True)
sys.stdin.read()
"""


def test_a_commit_waits_for_another_commands_commit(tmp_path, monkeypatch):
    """Commits into one place take turns (a lock on the parent folder, held by a second real process here)."""
    holder = subprocess.Popen([sys.executable, '-c', LOCK_HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, universal_newlines=True)
    try:
        assert holder.stdout.readline() == 'locked\n'
        monkeypatch.setattr(outputs, 'LOCK_TIMEOUT_SECONDS', 0.5)
        with pytest.raises(UserError) as error:
            write_set({str(tmp_path / 'out' / 'a.bin'): b'a'})
        assert str(error.value) == '%s: another command has been writing here for 0.5 s; nothing was written' \
            % tmp_path
        assert os.listdir(str(tmp_path)) == []
        holder.stdin.close()
        holder.wait()
        write_set({str(tmp_path / 'out' / 'a.bin'): b'a'})
        assert listing(str(tmp_path)) == {'out/': None, 'out/a.bin': b'a'}
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# ---------------------------------------------------------------------------------------------------------------
# What killed writers leave behind


def dead_pid():
    """The id of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


# Makes a staging folder in argv[1] for a target named argv[2] (argv[3]: the folder it swaps, if any), puts a file
# in it and ends without cleaning up, as a killed process would.
ABANDONED_STAGE = """
import os, sys
sys.path.insert(0, %r)
from nodules.util import outputs
stage = outputs._make_stage(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
open(os.path.join(stage, 'new', 'img0.png'), 'wb').write(b'partial')
print(stage)
"""


def abandoned_stage(directory, label, swap_of=None):
    """The path of a staging folder that a process which has ended left in `directory`."""
    command = [sys.executable, '-c', ABANDONED_STAGE % ROOT, str(directory), label] + ([swap_of] if swap_of else [])
    return subprocess.check_output(command, universal_newlines=True).strip()


def test_remove_stale_temporaries_removes_only_what_it_can_prove_it_made(tmp_path):
    dead = dead_pid()
    stale = abandoned_stage(tmp_path, 'out')
    running = outputs._make_stage(str(tmp_path), 'mine')   # this process's: still running
    record = open(os.path.join(stale, outputs.STAGE_MARKER)).read()
    look_alikes = {
        '.staging-mybackup': None, '.new.20240101.old': None, '.staging-%d-abc123' % dead: None,
        '.out.%d-x8y7z6.tmp' % dead: None,                   # the names of earlier versions
        '.out.nodules-%d-0123abcd.tmp' % dead: None,          # the exact form, but no record: the user's
        '.out.nodules-%d-89abcdef.tmp' % dead: record,        # a record that names another folder (a copy)
        '.out.nodules-%d-aaaaaaaa.tmp' % dead: 'not json',
    }
    for name, marker in look_alikes.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / 'work.txt').write_bytes(b'the user data')
        if marker:
            (tmp_path / name / outputs.STAGE_MARKER).write_text(marker)
    (tmp_path / ('.notes.nodules-%d-00000000.tmp' % dead)).write_bytes(b'a file, not a folder')
    empty = tmp_path / ('.out.nodules-%d-ffffffff.tmp' % dead)   # killed between making a stage and marking it
    empty.mkdir()
    cut = {}   # killed while writing the record: nothing but the record's first bytes, or an empty record
    for name, length in (('.out.nodules-%d-eeeeeeee.tmp' % dead, 0), ('.out.nodules-%d-dddddddd.tmp' % dead, 30)):
        (tmp_path / name).mkdir()
        whole = '{"made_by": "nodules", "stage": "%s", "swap_of": null}\n' % name
        (tmp_path / name / outputs.STAGE_MARKER).write_text(whole[:length])
        cut[name] = True
    other = '.out.nodules-%d-cccccccc.tmp' % dead   # a cut record naming another folder: not provably ours
    (tmp_path / other).mkdir()
    (tmp_path / other / outputs.STAGE_MARKER).write_text('{"made_by": "nodules", "stage": ".elsewhere')
    before = listing(str(tmp_path))
    removed = outputs.remove_stale_temporaries(str(tmp_path))
    gone = [os.path.basename(stale), empty.name] + sorted(cut)
    assert sorted(removed) == sorted(gone)
    assert listing(str(tmp_path)) == dict((path, data) for path, data in before.items()
                                          if not path.startswith(tuple(gone)))
    assert os.path.isdir(running)


def test_a_swap_cut_between_its_two_renames_is_put_back(tmp_path):
    """Where a swap takes two renames, a hard kill between them leaves the old folder in the stage and its name
    free: the next clean-up gives the old folder its name back."""
    stage = abandoned_stage(tmp_path, 'out', swap_of='out')
    os.mkdir(os.path.join(stage, 'old'))
    with open(os.path.join(stage, 'old', 'a.bin'), 'wb') as f:
        f.write(b'old a')
    outputs.remove_stale_temporaries(str(tmp_path))
    assert listing(str(tmp_path)) == {'out/': None, 'out/a.bin': b'old a'}


def test_a_new_set_cleans_up_after_a_killed_one(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'notes.txt').write_bytes(b'keep')
    abandoned_stage(out, 'out')
    write_set({str(out / 'img0.png'): b'complete'})
    assert listing(str(out)) == {'img0.png': b'complete', 'notes.txt': b'keep'}


# ---------------------------------------------------------------------------------------------------------------
# A full disk: one line naming the file, nothing half-written


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB file system (tmpfs) mounted for the test: writing more gives ENOSPC, as a full disk does."""
    path = tmp_path / 'small-disk'
    path.mkdir()
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', str(path)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if mounted.returncode != 0:
        pytest.skip('a small file system cannot be mounted here (%s)' % mounted.stdout.strip())
    try:
        yield path
    finally:  # lazily: a file a failed test left open must not keep the mount
        subprocess.run(['umount', '-l', str(path)])


def noise_images(count, size=64, seed=0):
    """Random uint8 images: their PNGs do not compress, so a few of them fill the small disk."""
    return np.random.RandomState(seed).randint(0, 256, (count, size, size)).astype(np.uint8)


def test_a_full_disk_stops_a_file_set_with_one_line(full_disk):
    out = str(full_disk / 'out')
    with pytest.raises(UserError) as error:
        outputs.write_pngs(noise_images(40), out, 'img_%d.png', grid='mosaic.png')
    assert re.match(r'^%s/img_\d+\.png: cannot be written \(No space left on device\); nothing was written$' % out,
                    str(error.value)), str(error.value)
    assert listing(str(full_disk)) == {}


def test_a_full_disk_keeps_the_old_file_of_an_atomic_write(full_disk):
    path = str(full_disk / 'network-final.pkl')
    outputs.write_file_atomic(path, b'old weights')
    with pytest.raises(UserError) as error:
        outputs.write_file_atomic(path, b'x' * 200000)
    assert str(error.value) == '%s: cannot be written (No space left on device); the old file is unchanged' % path
    assert listing(str(full_disk)) == {'network-final.pkl': b'old weights'}


def test_dataset_display_on_a_full_disk(full_disk, tmp_path):
    from conftest import load_script
    from nodules.data import dataset
    data = dataset.write_dataset(str(tmp_path / 'noise'), noise_images(40)[:, np.newaxis])
    with pytest.raises(UserError) as error:
        load_script('1-dataset_display.py').main(['--tfrecords', dataset.tfrecord_path(data, 6), '--number', '40',
                                                  '--outdir', str(full_disk / 'demo')])
    assert 'cannot be written (No space left on device); nothing was written' in str(error.value)
    assert listing(str(full_disk)) == {}


@pytest.mark.slow  # builds a network twice
def test_inference_on_a_full_disk(full_disk, tmp_path):
    """2-inference.py writes its PNGs through the same FileSet: a disk filled but for a few KiB stops it in one
    line, and nothing of its PNGs is left."""
    from conftest import load_script
    from test_inference import conditional_pickle
    model = conditional_pickle(str(tmp_path / 'tiny.pkl'))
    (full_disk / 'filler').write_bytes(b'x' * 56 * 1024)
    with pytest.raises(UserError) as error:
        load_script('2-inference.py').main(['--model', model, '--number', '60', '--outdir', str(full_disk / 'demo'),
                                            '--label', 'AIS'])
    assert 'cannot be written (No space left on device); nothing was written' in str(error.value)
    assert sorted(os.listdir(str(full_disk))) == ['filler']


# ---------------------------------------------------------------------------------------------------------------
# Interrupts


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_interrupts_are_held_until_the_block_ends(signum):
    def terminate(number, frame):
        raise cli.Terminated()
    previous = signal.signal(signal.SIGTERM, terminate)  # as cli.run installs it
    try:
        finished = []
        with pytest.raises(KeyboardInterrupt):
            with outputs.interrupts_deferred():
                os.kill(os.getpid(), signum)
                for _ in range(1000):   # plenty of bytecodes at which Python would run a handler
                    pass
                finished.append(True)
        assert finished == [True]
        assert signal.getsignal(signal.SIGTERM) is terminate   # handlers are back as they were
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------------------------------
# write_file_atomic


def test_write_file_atomic_creates_and_replaces(tmp_path):
    path = str(tmp_path / 'result.bin')
    outputs.write_file_atomic(path, b'first')
    assert listing(str(tmp_path)) == {'result.bin': b'first'}
    outputs.write_file_atomic(path, b'second, longer')
    assert listing(str(tmp_path)) == {'result.bin': b'second, longer'}


def test_write_file_atomic_temporary_name_is_hidden_and_tagged(tmp_path, monkeypatch):
    """While the data is flushed, the folder holds the staging folder `.NAME.nodules-PID-XXXXXXXX.tmp` (what
    remove_stale_temporaries knows)."""
    directory = str(tmp_path)
    seen = []
    real_fsync = os.fsync

    def fsync_and_look(fd):  # the real fsync, plus a look at the folder at that moment
        seen.extend(os.listdir(directory))
        return real_fsync(fd)
    monkeypatch.setattr(os, 'fsync', fsync_and_look)
    outputs.write_file_atomic(os.path.join(directory, 'result.bin'), b'data')
    assert len(seen) == 1 and re.match(r'^\.result\.bin\.nodules-%d-[0-9a-f]{8}\.tmp$' % os.getpid(), seen[0]), seen
    assert os.listdir(directory) == ['result.bin']


def test_write_file_atomic_failure_keeps_old_file_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / 'result.bin')
    outputs.write_file_atomic(path, b'first')
    with pytest.raises(TypeError):
        outputs.write_file_atomic(path, u'text is not bytes')
    assert listing(str(tmp_path)) == {'result.bin': b'first'}


# ---------------------------------------------------------------------------------------------------------------
# float_to_uint8


def reference_uint8(x):
    x = np.asarray(x, dtype=np.float64)
    return np.clip(np.rint((x + 1) / 2 * 255), 0, 255).astype(np.uint8)


def test_float_to_uint8_formula():
    special = np.array([-1.0, 1.0, 0.0, -2.0, 3.0, -1e6, 1e6, 0.5, -0.5, 1.0 / 255, -1.0 / 255, 0.999, -0.999],
                       dtype=np.float32)
    got = outputs.float_to_uint8(special)
    assert got.dtype == np.uint8
    assert got.tolist() == reference_uint8(special).tolist()
    assert got[:5].tolist() == [0, 255, 128, 0, 255]   # 127.5 rounds half to even
    grid = (np.arange(256, dtype=np.float64) / 127.5 - 1).astype(np.float32)   # exactly the 256 grey levels
    assert outputs.float_to_uint8(grid).tolist() == list(range(256))
    x = np.random.RandomState(0).uniform(-1.3, 1.3, size=(4, 1, 16, 16)).astype(np.float32)
    got = outputs.float_to_uint8(x)
    assert got.shape == x.shape
    np.testing.assert_array_equal(got, reference_uint8(x))


def test_float_to_uint8_other_range():
    assert outputs.float_to_uint8([0.0, 127.6, 255.0, 300.0], drange=(0, 255)).tolist() == [0, 128, 255, 255]


# ---------------------------------------------------------------------------------------------------------------
# image_grid


def tiles(n, h, w, channels=None):
    shape = (n, h, w) if channels is None else (n, h, w, channels)
    return (np.arange(int(np.prod(shape))) % 250 + 1).astype(np.uint8).reshape(shape)


def test_image_grid_default_layout():
    images = tiles(5, 2, 3)
    grid = outputs.image_grid(images)
    assert grid.dtype == np.uint8
    assert grid.shape == (2 * 2, 3 * 3)     # ceil(sqrt(5)) = 3 columns, 2 rows
    for index in range(5):
        row, col = divmod(index, 3)
        np.testing.assert_array_equal(grid[row * 2:row * 2 + 2, col * 3:col * 3 + 3], images[index])
    assert not grid[2:4, 6:9].any()         # the empty sixth slot is black


def test_image_grid_columns_and_padding():
    images = tiles(5, 2, 3)
    grid = outputs.image_grid(images, columns=2, padding=1)
    assert grid.shape == (3 * 3 - 1, 2 * 4 - 1)
    mask = np.zeros(grid.shape, dtype=bool)
    for index in range(5):
        row, col = divmod(index, 2)
        np.testing.assert_array_equal(grid[row * 3:row * 3 + 2, col * 4:col * 4 + 3], images[index])
        mask[row * 3:row * 3 + 2, col * 4:col * 4 + 3] = True
    assert not grid[~mask].any()            # padding and empty slots are black


def test_image_grid_rgb_and_single():
    images = tiles(4, 2, 2, channels=3)
    grid = outputs.image_grid(images)
    assert grid.shape == (4, 4, 3)
    np.testing.assert_array_equal(grid[2:4, 0:2], images[2])
    np.testing.assert_array_equal(outputs.image_grid(tiles(1, 3, 3)), tiles(1, 3, 3)[0])


# ---------------------------------------------------------------------------------------------------------------
# PNGs


def test_png_bytes_grayscale_and_rgb(tmp_path):
    gray = np.random.RandomState(1).randint(0, 256, (16, 16)).astype(np.uint8)
    path = str(tmp_path / 'g.png')
    outputs.write_file_atomic(path, outputs.png_bytes(gray))
    mode, array = read_png(path)
    assert mode == 'L'
    assert array.dtype == np.uint8
    np.testing.assert_array_equal(array, gray)
    colour = np.random.RandomState(2).randint(0, 256, (8, 8, 3)).astype(np.uint8)
    path = str(tmp_path / 'c.png')
    outputs.write_file_atomic(path, outputs.png_bytes(colour))
    mode, array = read_png(path)
    assert mode == 'RGB'
    np.testing.assert_array_equal(array, colour)
    with pytest.raises(ValueError):
        outputs.png_bytes(gray.astype(np.float32))


def test_write_pngs_are_8bit_grayscale_and_exact(tmp_path):
    images = np.random.RandomState(3).randint(0, 256, (4, 16, 16)).astype(np.uint8)
    images[0] = 0
    images[1] = 255
    out = str(tmp_path / 'pngs')
    written = outputs.write_pngs(images, out, 'img_%d.png', grid='mosaic.png')
    assert written == [os.path.join(out, 'img_%d.png' % i) for i in range(4)] + [os.path.join(out, 'mosaic.png')]
    assert sorted(os.listdir(out)) == ['img_0.png', 'img_1.png', 'img_2.png', 'img_3.png', 'mosaic.png']
    for index in range(4):
        mode, array = read_png(os.path.join(out, 'img_%d.png' % index))
        assert mode == 'L'
        np.testing.assert_array_equal(array, images[index])
    mode, mosaic = read_png(os.path.join(out, 'mosaic.png'))
    assert mode == 'L'
    assert all(contains_tile(mosaic, image) for image in images)
    # Same call again: identical files, fine.  Different images: refused, nothing changed.
    before = listing(out)
    outputs.write_pngs(images, out, 'img_%d.png', grid='mosaic.png')
    assert listing(out) == before
    changed = images.copy()
    changed[3, 0, 0] ^= 1
    with pytest.raises(UserError):
        outputs.write_pngs(changed, out, 'img_%d.png')
    assert listing(out) == before
    outputs.write_pngs(changed, out, 'img_%d.png', overwrite=True)
    np.testing.assert_array_equal(read_png(os.path.join(out, 'img_3.png'))[1], changed[3])


def test_write_pngs_grid_elsewhere(tmp_path):
    images = np.random.RandomState(4).randint(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    grid_path = str(tmp_path / 'grid.png')
    outputs.write_pngs(images, str(tmp_path / 'out'), 'x%d.png', grid=grid_path)
    assert sorted(os.listdir(str(tmp_path))) == ['grid.png', 'out']
    assert sorted(os.listdir(str(tmp_path / 'out'))) == ['x0.png', 'x1.png', 'x2.png']
    mode, array = read_png(os.path.join(str(tmp_path / 'out'), 'x1.png'))
    assert mode == 'RGB'
    np.testing.assert_array_equal(array, images[1])
    mode, mosaic = read_png(grid_path)
    assert mode == 'RGB'
    assert all(contains_tile(mosaic, image) for image in images)


@pytest.mark.parametrize('case', ['exists with other contents', 'equals an image name', 'under a file',
                                  'ends in a slash', 'is a directory'])
def test_write_pngs_mosaic_conflicts_leave_everything_as_it_was(tmp_path, case):
    images = np.random.RandomState(5).randint(0, 256, (3, 8, 8)).astype(np.uint8)
    out = tmp_path / 'out'
    (tmp_path / 'notes').write_bytes(b'a file')
    grid = str(tmp_path / 'mosaic.png')
    if case == 'exists with other contents':
        (tmp_path / 'mosaic.png').write_bytes(b'an earlier mosaic')
    elif case == 'equals an image name':
        grid = 'x1.png'
    elif case == 'under a file':
        grid = str(tmp_path / 'notes' / 'mosaic.png')
    elif case == 'ends in a slash':
        grid = str(tmp_path / 'mosaics') + '/'
    else:
        (tmp_path / 'mosaic.png').mkdir()
    before = listing(str(tmp_path))
    with pytest.raises(UserError) as error:
        outputs.write_pngs(images, str(out), 'x%d.png', grid=grid)
    assert os.path.basename(grid.rstrip('/')) in str(error.value)
    assert listing(str(tmp_path)) == before   # no image, no output folder, no staging folder
