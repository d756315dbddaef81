"""nodules/util/values.py: the memory a command may use honours the limits a user or a container sets."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from nodules.util import values
from nodules.util.errors import UserError


def test_memory_is_at_most_the_machine_memory():
    assert 0 < values.memory_bytes() <= os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def test_an_address_space_limit_lowers_the_memory_available():
    """`ulimit -v` (RLIMIT_AS), set in a fresh process: the estimate checks compare against it."""
    limit = 3 << 30
    code = ('import resource, sys; sys.path.insert(0, %r); resource.setrlimit(resource.RLIMIT_AS, (%d, %d)); '
            'from nodules.util import values; print(values.memory_bytes())' % (ROOT, limit, limit))
    output = subprocess.check_output([sys.executable, '-c', code], universal_newlines=True)
    assert int(output) == min(limit, values.memory_bytes())


def test_check_memory_names_what_needs_it():
    values.check_memory(1, 'one byte')
    with pytest.raises(UserError) as error:
        values.check_memory(values.memory_bytes() + 1, '--batch-size 7: seven images')
    assert str(error.value).startswith('--batch-size 7: seven images needs about ')
    assert 'more than the' in str(error.value) and '\n' not in str(error.value)
