"""Tests for the kinds of network pickle in nodules/gan/legacy.py: pix2pix (G, D) beside PGGAN (G, D, Gs)."""
import collections
import os
import pickle

import numpy as np
import pytest

from nodules.gan import legacy
from nodules.util.errors import UserError

DEMO_PGGAN = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          'demo', 'weight', 'AIS.pkl')


def pix2pix_states(seed=0):
    rs = np.random.RandomState(seed)
    def state(name, func, kwargs, shapes):
        return {'version': 2, 'name': name, 'static_kwargs': kwargs, 'build_module_src': '# not run',
                'build_func_name': func,
                'variables': [(n, rs.standard_normal(s).astype(np.float32)) for n, s in shapes]}
    return (state('G', 'pix2pix_G', {'ngf': 2, 'resolution': 4}, [('down1/weight', (4, 4, 1, 2)), ('down1/bias', (2,))]),
            state('D', 'pix2pix_D', {'ndf': 2, 'resolution': 4}, [('conv1/weight', (4, 4, 2, 2))]))


def test_pix2pix_states_round_trip_in_the_original_layout(tmp_path):
    path = str(tmp_path / 'p.pkl')
    states = pix2pix_states()
    legacy.save_network_states(path, states)
    with open(path, 'rb') as f:
        data = f.read()
    assert b'tfutil' in data and b'Network' in data and b'nodules' not in data  # named as the original's class
    loaded = legacy.read_network_states(path, 'pix2pix')
    assert legacy.model_kind(path) == 'pix2pix'
    for saved, read in zip(states, loaded):
        assert {k: v for k, v in read.items() if k != 'variables'} == {k: v for k, v in saved.items()
                                                                      if k != 'variables'}
        for (name, value), (read_name, read_value) in zip(saved['variables'], read['variables']):
            assert name == read_name
            np.testing.assert_array_equal(value, read_value)
            assert read_value.dtype == np.float32


def test_each_kind_refuses_the_other_in_one_line(tmp_path):
    path = str(tmp_path / 'p.pkl')
    legacy.save_network_states(path, pix2pix_states())
    with pytest.raises(UserError) as error:
        legacy.read_network_states(path)
    assert str(error.value) == ('%s: is a pix2pix mask-to-patch model (G, D), not a PGGAN network pickle (G, D, Gs); '
                                '5-pix2pix.py generate reads it' % path)
    with pytest.raises(UserError) as error:
        legacy.read_network_states(DEMO_PGGAN, 'pix2pix')
    assert str(error.value) == ('%s: is a PGGAN network pickle (G, D, Gs), not a pix2pix mask-to-patch model (G, D); '
                                '2-inference.py reads it' % DEMO_PGGAN)
    assert legacy.model_kind(DEMO_PGGAN) == 'pggan'


def test_a_pix2pix_pickle_with_a_foreign_network_is_refused(tmp_path):
    path = str(tmp_path / 'p.pkl')
    G, D = pix2pix_states()
    D['build_func_name'] = 'D_paper'
    legacy.save_network_states(path, (G, D))
    with pytest.raises(UserError) as error:
        legacy.read_network_states(path, 'pix2pix')
    assert "network D is built by 'D_paper', which is not a pix2pix network (pix2pix_D)" in str(error.value)
    with pytest.raises(UserError, match='not the \\(G, D, Gs\\) network tuple'):
        legacy.model_kind(path)


def test_pickle_code_in_a_pix2pix_file_is_never_run(tmp_path):
    path = str(tmp_path / 'evil.pkl')
    with open(path, 'wb') as f:
        pickle.dump((os.system, ('echo hi',)), f)  # a callable by name: refused before anything is built
    with pytest.raises(UserError, match='refused'):
        legacy.read_network_states(path, 'pix2pix')
