"""Seeded fuzzing of the two file readers a user points at arbitrary files: TFRecords (nodules/data/dataset.py) and network
pickles (nodules/gan/legacy.py); and of the existing output folders a new dataset may or may not replace.

Mutants of a small valid file of each kind -- flipped bytes, truncations, inserted bytes, length fields (with
valid checksums, so TensorFlow would trust them), memo indices, frame lengths, protocol numbers -- go through
the real readers in a separate interpreter whose data segment is limited (a crash or a runaway allocation fails
the test instead of ending the test run), and a few through the real scripts.  Every mutant must either read
cleanly or fail with exactly one line that names the file: never a traceback, a crash or a hang.

Well-formed files that say something wrong are fuzzed too: network states with static keywords of every type
and range, networks in other roles, class names and checksums (each generator that reads cleanly is built and
run); latents files of every dtype, shape and size; and PNGs of every mode create_from_images may meet
(nodules/data/image_files.py).

The cases are the same on every run (FUZZ_SEED in the environment explores others); each case's name says how
its file was made, so a failure reproduces from its name alone.
"""
import json
import os
import pickle
import pickletools
import resource
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from test_dataset import image_example, mask, crc32c_bitwise, random_images, record_bytes
from test_legacy import published_pickle, published_states

SEED = int(os.environ.get('FUZZ_SEED', '20240611'))
CASES_PER_KIND = 24           # TFRecords mutants, and pickle mutants, read by direct calls
DATA_LIMIT_MB = 768           # above what the reader process holds after importing TensorFlow
SCRIPT_DATA_LIMIT_MB = 3072   # a whole script, TensorFlow's start-up included
TIMEOUT = 240


# ----------------------------------------------------------------------------------------------------------------
# Mutants


def base_tfrecords():
    """Four framed records of 1x8x8 images, byte for byte as TensorFlow writes them."""
    return [record_bytes(image_example(image.shape, image.tobytes()).SerializeToString())
            for image in random_images(4, 1, 8, seed=SEED % 1000)]


def pick(rng, options):
    """One of `options` (Python ints of any size: rng.choice would turn them into floats or overflow)."""
    return options[int(rng.randint(len(options)))]


def record_offsets(records):
    offsets, offset = [], 0
    for record in records:
        offsets.append(offset)
        offset += len(record)
    return offsets


def with_length(data, offset, length, valid_checksum=True):
    """`data` with the record header at `offset` claiming `length` (and its checksum fixed, unless told)."""
    field = struct.pack('<Q', length)
    checksum = struct.pack('<I', mask(crc32c_bitwise(field))) if valid_checksum else data[offset + 8:offset + 12]
    return data[:offset] + field + checksum + data[offset + 12:]


def tfrecords_mutants(rng, count):
    """[(name, bytes)]: the reported 2^50 length first, then `count` - 1 seeded mutants."""
    records = base_tfrecords()
    data, offsets = b''.join(records), record_offsets(records)
    mutants = [('length 2^50 in record 0, valid checksum', with_length(records[0][:112], 0, 2 ** 50))]
    lengths = [0, 1, 2 ** 31 - 1, 2 ** 32, 2 ** 50, 2 ** 63, 2 ** 64 - 1]
    kinds = ['flip', 'flips', 'truncate', 'length', 'length raw', 'insert', 'payload']
    while len(mutants) < count:
        kind = kinds[len(mutants) % len(kinds)]
        record = int(rng.randint(len(records)))
        if kind == 'flip':
            position, bit = int(rng.randint(len(data))), int(rng.randint(8))
            mutant = bytearray(data)
            mutant[position] ^= 1 << bit
            name, mutant = 'flip bit %d of byte %d' % (bit, position), bytes(mutant)
        elif kind == 'flips':
            positions = sorted(int(p) for p in rng.randint(len(data), size=8))
            mutant = bytearray(data)
            for position in positions:
                mutant[position] = int(rng.randint(256))
            name, mutant = 'random bytes at %s' % positions, bytes(mutant)
        elif kind == 'truncate':
            cut = int(rng.randint(1, len(data)))
            name, mutant = 'truncated to %d bytes' % cut, data[:cut]
        elif kind in ('length', 'length raw'):
            length = (pick(rng, lengths) if rng.rand() < 0.6
                      else len(records[record]) - 16 + int(rng.randint(-3, 4)))
            valid = kind == 'length'
            name = 'record %d claims %d bytes (%s length checksum)' % (record, length, 'valid' if valid else 'old')
            mutant = with_length(data, offsets[record], length, valid)
        elif kind == 'insert':
            position, size = int(rng.randint(len(data))), int(rng.randint(1, 20))
            name = 'inserted %d random bytes at byte %d' % (size, position)
            mutant = data[:position] + rng.bytes(size) + data[position:]
        else:  # a payload that is framed and checksummed correctly but is random bytes or a strange Example
            if rng.rand() < 0.5:
                payload, what = rng.bytes(int(rng.randint(0, 300))), 'random bytes'
            else:
                shape = [pick(rng, [-1, 0, 1, 3, 8, 2 ** 31, 2 ** 62]) for _ in range(int(rng.randint(0, 5)))]
                payload, what = image_example(shape, rng.bytes(int(rng.randint(0, 100)))).SerializeToString(), \
                    'an Example of shape %s' % shape
            name = 'record %d holds %s (valid checksums)' % (record, what)
            mutant = b''.join(records[:record] + [record_bytes(payload)] + records[record + 1:])
        mutants.append((name, mutant))
    return mutants


def opcode_positions(data):
    """[(opcode name, position of the opcode, position of its argument, argument length in bytes)]."""
    ops = list(pickletools.genops(data))
    found = []
    for index, (op, _, position) in enumerate(ops):
        end = ops[index + 1][2] if index + 1 < len(ops) else len(data)
        found.append((op.name, position, position + 1, end - position - 1))
    return found


def without_frames(data):
    """The same pickle with its FRAME opcodes dropped (frames are optional), so bytes can be inserted."""
    return b''.join(data[position:position + 1 + size] for name, position, _, size in opcode_positions(data)
                    if name != 'FRAME')


LENGTH_FIELDS = {'SHORT_BINBYTES': '<B', 'SHORT_BINUNICODE': '<B', 'BINBYTES': '<I', 'BINUNICODE': '<I',
                 'BINBYTES8': '<Q', 'BINUNICODE8': '<Q'}
MEMO_FIELDS = {'BINGET': '<B', 'BINPUT': '<B', 'LONG_BINGET': '<I', 'LONG_BINPUT': '<I'}


def replace_field(data, position, fmt, value):
    size = struct.calcsize(fmt)
    return data[:position] + struct.pack(fmt, value) + data[position + size:]


def pickle_mutants(rng, count):
    """[(name, bytes)]: the reported memo index first, then `count` - 1 seeded mutants of a tiny (G, D, Gs)."""
    data = published_pickle(published_states(), protocol=4)
    unframed = without_frames(data)
    ops = opcode_positions(data)
    mutants = [('LONG_BINPUT 1400000000 after the protocol',
                unframed[:2] + b'r' + struct.pack('<I', 1400000000) + unframed[2:])]
    kinds = ['flip', 'truncate', 'length', 'memo', 'memo insert', 'frame', 'protocol', 'flips']
    while len(mutants) < count:
        kind = kinds[len(mutants) % len(kinds)]
        if kind == 'flip':
            position, bit = int(rng.randint(len(data))), int(rng.randint(8))
            mutant = bytearray(data)
            mutant[position] ^= 1 << bit
            name, mutant = 'flip bit %d of byte %d' % (bit, position), bytes(mutant)
        elif kind == 'flips':  # in the first 2 kB, where the structure is (the rest is mostly array data)
            positions = sorted(int(p) for p in rng.randint(min(len(data), 2048), size=4))
            mutant = bytearray(data)
            for position in positions:
                mutant[position] = int(rng.randint(256))
            name, mutant = 'random bytes at %s' % positions, bytes(mutant)
        elif kind == 'truncate':
            cut = int(rng.randint(len(data)))
            name, mutant = 'truncated to %d bytes' % cut, data[:cut]
        elif kind == 'length':
            candidates = [op for op in ops if op[0] in LENGTH_FIELDS]
            op_name, position, argument, _ = pick(rng, candidates)
            fmt = LENGTH_FIELDS[op_name]
            value = int(rng.randint(0, 2 ** min(8 * struct.calcsize(fmt), 62), dtype=np.int64)) \
                if rng.rand() < 0.5 else 2 ** (8 * struct.calcsize(fmt)) - 1
            name = '%s at byte %d claims %d bytes' % (op_name, position, value)
            mutant = replace_field(data, argument, fmt, value)
        elif kind == 'memo':
            candidates = [op for op in ops if op[0] in MEMO_FIELDS]
            op_name, position, argument, _ = pick(rng, candidates)
            value = int(rng.randint(256))
            name, mutant = '%s at byte %d reads %d' % (op_name, position, value), \
                replace_field(data, argument, MEMO_FIELDS[op_name], value)
        elif kind == 'memo insert':
            unframed_ops = opcode_positions(unframed)
            _, position, _, _ = unframed_ops[int(rng.randint(1, len(unframed_ops)))]
            opcode = 'rj'[int(rng.randint(2))]  # LONG_BINPUT / LONG_BINGET
            value = pick(rng, [1400000000, 2 ** 32 - 1, int(rng.randint(2 ** 31))])
            name = '%s %d inserted at byte %d (frames dropped)' % (opcode, value, position)
            mutant = unframed[:position] + opcode.encode() + struct.pack('<I', value) + unframed[position:]
        elif kind == 'frame':
            frames = [op for op in ops if op[0] == 'FRAME']
            _, position, argument, _ = pick(rng, frames)
            old, = struct.unpack_from('<Q', data, argument)
            value = pick(rng, [0, old - 1, old + 1, 2 ** 63, 2 ** 64 - 1])
            name, mutant = 'FRAME at byte %d claims %d bytes' % (position, value), \
                replace_field(data, argument, '<Q', value)
        else:
            value = int(rng.randint(256))
            name, mutant = 'protocol byte %d' % value, data[:1] + bytes([value]) + data[2:]
        mutants.append((name, mutant))
    return mutants


# Values a careless or hostile file gives to the static keywords of a network (NaN and huge numbers are refused
# before any keyword is looked at, by the general check of the state), and keywords no builder takes.
SETTING_VALUES = [None, True, False, 0, 1, 2, 3, 4, -1, 16, 64, 64.5, 1000000000, 2 ** 31 - 1, 'yes', '', 'float16',
                  'linear', [1, 2], ['AIS', 'MIA', 'IAC'], ['AIS', 'AIS', 'IAC'], 0.5, 1e-9]
SETTING_NAMES = ['num_channels', 'resolution', 'graph_resolution', 'label_size', 'fmap_base', 'fmap_max', 'fmap_decay',
                 'latent_size', 'normalize_latents', 'use_wscale', 'use_pixelnorm', 'pixelnorm_epsilon', 'dtype',
                 'fused_scale', 'mbstd_group_size', 'structure', 'label_names', 'augment_p', 'fmap_bse', 'use_bn']


def state_mutants(rng, count):
    """[(name, bytes)]: well-formed pickles of a tiny (G, D, Gs) whose states say something wrong or unusual:
    static keywords of every type, networks in other roles, class names, checksums (right, wrong, of a flipped
    weight)."""
    from nodules.gan import tfutil
    mutants = []
    kinds = ['setting', 'settings', 'roles', 'class names', 'checksum']
    while len(mutants) < count:
        states = published_states()
        kind = kinds[len(mutants) % len(kinds)]
        if kind in ('setting', 'settings'):
            edits = []
            for _ in range(1 if kind == 'setting' else 3):
                key, value = pick(rng, SETTING_NAMES), pick(rng, SETTING_VALUES)
                edits.append('%s=%r' % (key, value))
                for state in states if rng.rand() < 0.5 else states[2:]:
                    state['static_kwargs'] = dict(state['static_kwargs'], **{key: value})
            name = 'static keywords %s' % ', '.join(edits)
        elif kind == 'roles':
            order = [int(i) for i in rng.randint(3, size=3)]
            states = [dict(states[i], name=role) for i, role in zip(order, ('G', 'D', 'Gs'))]
            name = 'networks %s in the roles G, D, Gs' % [('G', 'D', 'Gs')[i] for i in order]
        elif kind == 'class names':
            size, names = int(rng.randint(0, 4)), pick(rng, [['AIS', 'MIA', 'IAC'], ['AIS', 'MIA'], ['AIS', ''],
                                                             [1, 2, 3], 'AIS'])
            for state in states:
                state['static_kwargs'] = dict(state['static_kwargs'], label_size=size, label_names=names)
            name = 'label_size %d with label_names %r' % (size, names)
        else:
            how = pick(rng, ['right', 'wrong', 'a string', 'of a flipped weight'])
            for state in states:
                state[tfutil.CHECKSUM_KEY] = tfutil.variables_checksum(state['variables'])
            if how == 'wrong':
                states[1][tfutil.CHECKSUM_KEY] ^= 1 << int(rng.randint(32))
            elif how == 'a string':
                states[0][tfutil.CHECKSUM_KEY] = 'crc'
            elif how == 'of a flipped weight':
                weight = states[2]['variables'][3][1]
                weight.reshape(-1)[int(rng.randint(weight.size))] *= -1
            name = 'checksum %s' % how
        mutants.append(('%s (case %d)' % (name, len(mutants)), published_pickle(states)))
    return mutants


def latents_mutants(rng, count):
    """[(name, bytes)]: .npy files of every kind of numbers, shape and size for a generator of latent size 16."""
    import io
    mutants = []
    while len(mutants) < count:
        dtype = pick(rng, ['int8', 'uint16', 'int64', 'float16', 'float32', 'float64', 'complex64', 'bool', 'U3'])
        shape = pick(rng, [(4, 16), (0, 16), (16,), (2, 3, 4), (3, 15), (1, 16), (6, 16)])
        scale = pick(rng, [1.0, 1e14, 1e16, 1e30, 1e300, 0.0])
        special = pick(rng, [None, None, 'nan', 'inf'])
        values = rng.standard_normal(shape) * scale
        if special and values.size:
            values.reshape(-1)[0] = float(special)
        with np.errstate(all='ignore'):
            array = values.astype(dtype)
        buffer = io.BytesIO()
        np.save(buffer, array)
        mutants.append(('%s %s latents scaled by %g%s (case %d)' % (dtype, list(shape), scale,
                                                                  ', one %s' % special if special else '',
                                                                  len(mutants)), buffer.getvalue()))
    return mutants


def image_mutants(rng, count):
    """[(name, bytes)]: PNG files of every Pillow mode create_from_images may meet, opaque or not, and 16-bit RGB."""
    import io
    import zlib
    from PIL import Image
    mutants = []
    while len(mutants) < count:
        mode = pick(rng, ['L', 'LA', 'RGB', 'RGBA', 'P grey', 'P colour', 'P transparent', 'I;16', '1',
                          '16-bit RGB'])
        opaque = bool(rng.rand() < 0.5)
        pixels = rng.randint(0, 256, (16, 16, 4)).astype(np.uint8)
        pixels[..., 3] = 255 if opaque else pixels[..., 3]
        buffer = io.BytesIO()
        if mode == '16-bit RGB':  # written by hand: Pillow writes no 16-bit colour PNG
            raw = b''.join(b'\x00' + (pixels[y, :, :3].astype('>u2') * 257).tobytes() for y in range(16))

            def chunk(kind, data):
                return (struct.pack('>I', len(data)) + kind + data
                        + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
            buffer.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 16, 16, 16, 2, 0, 0, 0))
                         + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
        elif mode == 'I;16':
            Image.fromarray(pixels[..., 0].astype(np.uint16) * 200).save(buffer, 'PNG')
        elif mode.startswith('P'):
            grey = Image.fromarray(pixels[..., 0], 'L')
            image = grey.convert('P') if mode == 'P grey' else Image.fromarray(pixels[..., :3], 'RGB').convert(
                'P', palette=Image.ADAPTIVE, colors=16)
            if mode == 'P transparent':
                image.info['transparency'] = int(pixels[0, 0, 0]) % 16
            image.save(buffer, 'PNG', **({'transparency': image.info['transparency']}
                                         if 'transparency' in image.info else {}))
        elif mode == '1':
            Image.fromarray(pixels[..., 0] > 127).save(buffer, 'PNG')
        else:
            channels = {'L': [0], 'LA': [0, 3], 'RGB': [0, 1, 2], 'RGBA': [0, 1, 2, 3]}[mode]
            array = pixels[..., channels]
            Image.fromarray(array[..., 0] if len(channels) == 1 else array, mode).save(buffer, 'PNG')
        mutants.append(('%s PNG%s (case %d)' % (mode, ', opaque' if opaque else '', len(mutants)), buffer.getvalue()))
    return mutants


def write_cases(directory, prefix, mutants, suffix):
    cases = []
    for index, (name, data) in enumerate(mutants):
        path = os.path.join(str(directory), '%s%02d%s' % (prefix, index, suffix))
        with open(path, 'wb') as f:
            f.write(data)
        cases.append({'name': name, 'path': path})
    return cases


# ----------------------------------------------------------------------------------------------------------------
# The readers, in a separate interpreter with a limited data segment


READER = """
import json
import resource
import sys
sys.path.insert(0, %(root)r)
from nodules.data import dataset, image_files
from nodules.gan import legacy
from nodules import generation
from nodules.util.errors import UserError
from nodules.util.tfcompat import tf

def data_segment_bytes():
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmData:'))

limit = data_segment_bytes() + %(extra_mb)d * 2 ** 20
resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))
built = 0
for line in sys.stdin:
    case = json.loads(line)
    print(json.dumps({'name': case['name'], 'started': True}), flush=True)  # the last case named, if it crashes
    try:
        if case['kind'] == 'tfrecords':
            images = dataset.read_images(case['path'])
            detail = '%%d images' %% len(images)
        elif case['kind'] == 'latents':
            latents = generation.load_latents(case['path'], 16, max_count=5)
            assert latents.dtype.name == 'float32' and latents.shape[1] == 16, latents.shape
            detail = '%%d latents' %% len(latents)
        elif case['kind'] == 'image':
            pixels = image_files.read_image(case['path'])
            assert pixels.shape[0] in (1, 3) and pixels.shape[1:] == (16, 16), pixels.shape
            detail = '%%s %%s' %% (pixels.dtype, list(pixels.shape))
        elif case['kind'] == 'state':  # build and run the generator of every state that reads cleanly
            states = legacy.read_network_states(case['path'])
            with tf.Graph().as_default(), tf.Session():
                Gs = legacy.network_from_state(states[2], case['path'])
                images = generation.generate_images(Gs, generation.random_latents(2, Gs.input_shapes[0][1], 0),
                                                    label_index=0 if Gs.input_shapes[1][1] else None)
            detail = 'Gs made images %%s' %% list(images.shape)
        else:
            states = legacy.read_network_states(case['path'])
            detail = 'states read'
            if built < 6:  # build the generator too, for some of the mutants that read cleanly
                built += 1
                with tf.Graph().as_default(), tf.Session():
                    legacy.network_from_state(states[2], case['path'])
                detail = 'Gs built'
        outcome = {'read': detail}
    except UserError as error:
        outcome = {'error': str(error)}
    print(json.dumps(dict(outcome, name=case['name'], path=case['path'])), flush=True)
"""


def run_readers(cases):
    """{case name: {'read': what} or {'error': message}}; fails naming the case that crashed the reader."""
    script = READER % {'root': ROOT, 'extra_mb': DATA_LIMIT_MB}
    result = subprocess.run([sys.executable, '-c', script], input=''.join(json.dumps(c) + '\n' for c in cases),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=TIMEOUT)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    if result.returncode != 0:
        last = lines[-1]['name'] if lines else '(before the first case)'
        pytest.fail('the reader died (exit %d) on case %r with SEED=%d:\n%s'
                    % (result.returncode, last, SEED, result.stderr[-3000:]))
    return dict((line['name'], line) for line in lines if 'started' not in line)


def assert_one_line_naming(outcome, path):
    if 'error' in outcome:
        message = outcome['error']
        assert message.startswith(path + ': ') and '\n' not in message and len(message) < 600, message
        assert len(message) > len(path) + 10, message   # says what is wrong, never an empty reason


@pytest.mark.slow  # ~5 s: hundreds of mutated files through every reader
def test_mutated_files_read_cleanly_or_fail_in_one_line(tmp_path):
    rng = np.random.RandomState(SEED)
    cases = [dict(c, kind='tfrecords') for c in write_cases(tmp_path, 'records', tfrecords_mutants(rng, CASES_PER_KIND),
                                                           '-r03.tfrecords')]
    cases += [dict(c, kind='pickle') for c in write_cases(tmp_path, 'network', pickle_mutants(rng, CASES_PER_KIND),
                                                         '.pkl')]
    assert len(set(c['name'] for c in cases)) == len(cases), 'case names must be unique to reproduce them'
    outcomes = run_readers(cases)
    assert sorted(outcomes) == sorted(c['name'] for c in cases)
    for case in cases:
        assert_one_line_naming(outcomes[case['name']], case['path'])
    # The mutants are hostile enough to matter: many are refused, the two reported ones for what they are.
    errors = [outcomes[c['name']]['error'] for c in cases if 'error' in outcomes[c['name']]]
    assert len(errors) >= len(cases) // 4, errors
    assert 'claims 1125899906842624 bytes' in outcomes[cases[0]['name']]['error']
    assert 'memo entry 1400000000' in outcomes[cases[CASES_PER_KIND]['name']]['error']


@pytest.mark.slow  # ~10 s: every generator that reads cleanly is built and run
def test_network_states_latents_and_images_read_cleanly_or_fail_in_one_line(tmp_path):
    """The kinds of issue 21: well-formed files that say something wrong (static keywords, roles, class names,
    checksums; latents of every dtype and size; images of every mode) are read or refused in one line."""
    rng = np.random.RandomState(SEED + 2)
    cases = [dict(c, kind='state') for c in write_cases(tmp_path, 'network', state_mutants(rng, CASES_PER_KIND),
                                                       '.pkl')]
    cases += [dict(c, kind='latents') for c in write_cases(tmp_path, 'z', latents_mutants(rng, CASES_PER_KIND),
                                                          '.npy')]
    cases += [dict(c, kind='image') for c in write_cases(tmp_path, 'image', image_mutants(rng, CASES_PER_KIND),
                                                        '.png')]
    assert len(set(c['name'] for c in cases)) == len(cases), 'case names must be unique to reproduce them'
    outcomes = run_readers(cases)
    assert sorted(outcomes) == sorted(c['name'] for c in cases)
    for case in cases:
        assert_one_line_naming(outcomes[case['name']], case['path'])
    for kind in ('state', 'latents', 'image'):  # each kind has cases of both outcomes
        results = [outcomes[c['name']] for c in cases if c['kind'] == kind]
        assert any('error' in r for r in results) and any('read' in r for r in results), (kind, results)


# ----------------------------------------------------------------------------------------------------------------
# A few mutants through the scripts themselves


def limit_data_segment():
    limit = SCRIPT_DATA_LIMIT_MB * 2 ** 20
    resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))


@pytest.mark.slow
def test_mutated_files_through_the_scripts(tmp_path):
    rng = np.random.RandomState(SEED + 1)
    records = write_cases(tmp_path, 'records', tfrecords_mutants(rng, 2), '-r03.tfrecords')
    networks = write_cases(tmp_path, 'network', pickle_mutants(rng, 2), '.pkl')
    runs = [('1-dataset_display.py', '--tfrecords', case, ['--number', '4']) for case in records]
    runs += [('2-inference.py', '--model', case, ['--number', '2']) for case in networks]
    processes = []
    for index, (script, option, case, extra) in enumerate(runs):
        out = str(tmp_path / ('out%d' % index))
        command = [sys.executable, os.path.join(ROOT, script), option, case['path'], '--outdir', out] + extra
        processes.append((case, out, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                      universal_newlines=True, cwd=ROOT,
                                                      preexec_fn=limit_data_segment)))
        if len(processes) % 2 == 0 or index == len(runs) - 1:  # two at a time
            for case, out, process in processes[-2:]:
                stdout, stderr = process.communicate(timeout=TIMEOUT)
                where = '%r (SEED=%d)' % (case['name'], SEED)
                assert 'Traceback' not in stderr, (where, stderr)
                if process.returncode == 0:
                    assert os.path.isdir(out), where
                else:
                    assert process.returncode == 1, (where, process.returncode, stderr)
                    assert stderr.startswith('error: %s: ' % case['path']) and stderr.count('\n') == 1, (where, stderr)
                    assert not os.path.exists(out), where


# ----------------------------------------------------------------------------------------------------------------
# Output folders: what a new dataset may replace


FOLDER_CASES = 24
# The kinds of entry a seeded existing OUT_DIR (named AIS) holds: (name, what it is).  The first four are a
# dataset's own files; everything else must never be replaced, with --overwrite or without.
OWN_ENTRIES = [('AIS-r02.tfrecords', 'file'), ('AIS-groups.npy', 'file'), ('AIS-meta.json', 'file'),
               ('AIS-rxx.labels', 'file')]
OTHER_ENTRIES = [('notes.txt', 'file'), ('MIA-r02.tfrecords', 'file'), ('src', 'folder'), ('.git', 'folder'),
                 ('AIS-r05.tfrecords', 'folder'), ('AIS-r03.tfrecords', 'link'), ('AIS-rxx.labels', 'pipe'),
                 ('.staging-mybackup', 'folder'), ('.AIS.nodules-1-0123abcd.tmp', 'folder')]


def make_entry(folder, name, kind):
    path = os.path.join(folder, name)
    if kind == 'file':
        with open(path, 'wb') as f:
            f.write(name.encode())
    elif kind == 'folder':
        os.mkdir(path)
        with open(os.path.join(path, 'work.txt'), 'wb') as f:
            f.write(b'the user data')
    elif kind == 'link':
        os.symlink(os.path.join(os.path.dirname(folder), 'target.txt'), path)
    else:
        os.mkfifo(path)


def tree(root):
    """{relative path: bytes of a regular file, or what else it is}, without opening anything but regular files."""
    import stat
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                with open(path, 'rb') as f:
                    found[os.path.relpath(path, root)] = f.read()
            else:
                found[os.path.relpath(path, root)] = 'link' if stat.S_ISLNK(mode) else 'folder' if stat.S_ISDIR(
                    mode) else 'pipe'
    return found


def test_seeded_output_folders_are_replaced_only_when_they_hold_a_dataset(tmp_path):
    """Seeded existing OUT_DIRs of random contents: write_dataset, with or without overwrite, succeeds exactly
    when the folder is empty or (with overwrite) holds only a dataset's own files; otherwise it refuses in one
    line naming the folder, and nothing anywhere changes."""
    from nodules.data import dataset
    from nodules.util.errors import UserError
    rng = np.random.RandomState(SEED + 2)
    images = random_images(2, 1, 4, seed=SEED % 1000)
    for case in range(FOLDER_CASES):
        root = tmp_path / ('case%02d' % case)
        out = root / 'AIS'
        os.makedirs(str(out))
        (root / 'target.txt').write_bytes(b'what a link points to')
        entries = {}
        for _ in range(int(rng.randint(0, 4))):
            pool = OWN_ENTRIES if rng.rand() < 0.6 else OTHER_ENTRIES
            name, kind = pool[int(rng.randint(len(pool)))]
            if name not in entries:
                entries[name] = kind
                make_entry(str(out), name, kind)
        overwrite = bool(rng.rand() < 0.7)
        where = 'case %d: %s, overwrite=%s (SEED=%d)' % (case, sorted(entries.items()), overwrite, SEED)
        allowed = not entries or (overwrite and all((name, kind) in OWN_ENTRIES for name, kind in entries.items()))
        before = tree(str(root))
        try:
            dataset.write_dataset(str(out), images, overwrite=overwrite)
        except UserError as error:
            assert not allowed, (where, str(error))
            assert str(error).startswith(str(out) + ': ') and '\n' not in str(error), where
            assert tree(str(root)) == before, where
            continue
        assert allowed, where
        assert sorted(os.listdir(str(out))) == ['AIS-groups.npy', 'AIS-r02.tfrecords'], where
        assert sorted(os.listdir(str(root))) == ['AIS', 'target.txt'], where
