"""A table of settings, one row per setting, and everything derived from it: defaults, checks, command-line flags,
config.json.  The machinery of nodules/training/settings.py in a form any script's table can use (5-pix2pix.py's
is nodules/pix2pix/settings.py); the rows' kinds (how a value is written on the command line and in JSON) are
that module's Kind classes.

No TensorFlow here: scripts check their arguments with a table before anything slow is imported.
"""
import argparse
import collections
import json
import math
import numbers
import os
import re

from nodules.util import values
from nodules.util.errors import UserError

# ----------------------------------------------------------------------------------------------------------------
# Rules: (description, test) pairs; a value is valid when test(value) is true


def is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def rule(description, test, optional=False):
    """A rule; `optional` also accepts None (the setting's 'decide for me' value)."""
    return description, (lambda v: v is None or test(v)) if optional else test


def above(low, optional=False):
    return rule('a number > %g' % low, lambda v: is_real(v) and v > low, optional)


def at_least(low, whole=False, optional=False):
    kind, real = ('a whole number', values.is_whole) if whole else ('a number', is_real)
    return rule('%s >= %g' % (kind, low), lambda v: real(v) and v >= low, optional)


def between(low, high, below=False, whole=False, optional=False):
    kind, real = ('a whole number', values.is_whole) if whole else ('a number', is_real)
    return rule('%s from %g to %s%g' % (kind, low, 'below ' if below else '', high),
                lambda v: real(v) and low <= v and (v < high if below else v <= high), optional)


def one_of(choices):
    return rule('one of %s' % ', '.join(choices), lambda v: v in choices)


SWITCH = rule('true or false', lambda v: isinstance(v, bool))
SEED = rule(values.SEED_RANGE, values.is_seed, optional=True)
DIRECTORY = rule('a directory name', lambda v: isinstance(v, str) and v != '')
OPTIONAL_DIRECTORY = rule('a directory name', lambda v: isinstance(v, str) and v != '', optional=True)

# ----------------------------------------------------------------------------------------------------------------
# Rows and tables

Row = collections.namedtuple('Row', 'name default kind rule users help flag default_help off_help')
NO_FLAG = ''


def row(name, default, kind, rule, users, help, flag=None, default_help=None, off_help=None):
    """One setting: its name, default, Kind, rule, users (space-separated names of who reads it), help and flag
    (default --name-with-dashes; NO_FLAG for none); off_help describes --no-NAME of a switch."""
    if flag is None:
        flag = '--' + name.lower().replace('_', '-')
    return Row(name, default, kind, rule, tuple(users.split()), help, flag, default_help, off_help)


class SettingsTable(object):
    """The settings of one tool.  `directories`: settings naming a directory (recorded absolute in config.json, a
    relative one read relative to the config's folder).  `restored_note`: said in -h after every default when
    --resume restores the settings."""

    def __init__(self, rows, directories=(), restored_note=', or the resumed run\'s'):
        self.rows = tuple(rows)
        self.by_name = collections.OrderedDict((r.name, r) for r in self.rows)
        self.defaults = collections.OrderedDict((r.name, r.default) for r in self.rows)
        self.directories = tuple(directories)
        self.restored_note = restored_note

    def defaults_for(self, user):
        """{name: default} of the settings `user` reads, in the table's order."""
        return collections.OrderedDict((r.name, r.default) for r in self.rows if user in r.users)

    def check_value(self, name, value):
        """Raise ValueError('must be ..., got ...') unless `value` is valid for the setting `name`."""
        description, valid = self.by_name[name].rule
        if not valid(value):
            raise ValueError('must be %s, got %r' % (description, value))
        return value

    def check(self, settings, source='settings'):
        """Every setting of `settings` valid and known (UserError naming `source`); returns them over the
        defaults."""
        unknown = sorted(set(settings) - set(self.defaults))
        if unknown:
            raise UserError('%s: unknown settings %s' % (source, ', '.join(unknown)))
        for name, value in settings.items():
            try:
                self.check_value(name, value)
            except ValueError as error:
                raise UserError('%s: %s %s' % (source, name, error))
        return dict(self.defaults, **settings)

    # -- the command line ----------------------------------------------------------------------------------------

    def add_arguments(self, parser):
        """One flag per setting that has one (--no-NAME too for switches), in table order.  Every default is
        None, so that a flag given can be told from one left out (given)."""
        for setting in self.rows:
            if not setting.flag:
                continue
            parser.add_argument(setting.flag, dest=setting.name, default=None, help=self._help(setting),
                                **self._argparse_kwargs(setting))
            if setting.off_help:
                parser.add_argument('--no-' + setting.flag[2:], dest=setting.name, action='store_false',
                                    default=None, help=setting.off_help)

    def _argparse_kwargs(self, setting):
        kwargs = setting.kind.argparse_kwargs(setting)
        if 'type' in kwargs:  # the kind reads the text, then only what the rule accepts passes
            def parse(text):
                try:
                    return self.check_value(setting.name, setting.kind.parse(text))
                except ValueError as error:
                    raise argparse.ArgumentTypeError(str(error))
            parse.__name__ = setting.name
            kwargs['type'] = parse
        return kwargs

    def _help(self, setting):
        return ('%s (default: %s%s)' % (setting.help, self.default_text(setting),
                                        self.restored_note)).replace('%', '%%')

    @staticmethod
    def default_text(setting):
        """How -h writes a setting's default: its default_help, on/off, %g, none for empty lists, or the value."""
        if setting.default_help:
            return setting.default_help
        value = setting.default
        if isinstance(value, bool):
            return 'on' if value else 'off'
        if isinstance(value, float):
            return '%g' % value
        if value in ([], {}):
            return 'none'
        return str(value)

    def given(self, args):
        """{setting: value} of the flags given on the command line (argparse's namespace from add_arguments)."""
        given = {}
        for setting in self.rows:
            value = getattr(args, setting.name, None)
            if setting.flag and value is not None:
                given[setting.name] = setting.kind.from_args(value)
        return given

    # -- config.json ---------------------------------------------------------------------------------------------

    def config_bytes(self, settings, **details):
        """config.json of a run: its settings (directories absolute) plus `details` for people."""
        config = dict(details)
        for name, value in settings.items():
            if name in self.directories and isinstance(value, str):
                value = os.path.abspath(value)
            config[name] = self.by_name[name].kind.to_json(value)
        return (json.dumps(config, indent=2, sort_keys=True) + '\n').encode('utf-8')

    def read_config(self, path):
        """The settings recorded in the config.json at `path` (checked; UserError naming it)."""
        settings = read_config_file(path, self.by_name, self.defaults, self.directories)
        self.check(settings, path)
        return settings


def read_config_file(path, by_name, names, directories=()):
    """{name: value} of the settings `names` recorded in the config.json at `path`, not yet checked (UserError
    naming the file when it is not a JSON object); a directory recorded relative is relative to the run."""
    try:
        with open(path, 'rb') as f:
            config = json.loads(f.read(1 << 20).decode('utf-8'))
    except (OSError, ValueError) as error:
        raise UserError('%s: not a readable run configuration (%s)' % (path, str(error).splitlines()[0]))
    if not isinstance(config, dict):
        raise UserError('%s: not a run configuration (a JSON object)' % path)
    settings = {name: by_name[name].kind.from_json(config[name]) for name in names if name in config}
    for name in directories:
        if isinstance(settings.get(name), str):
            settings[name] = os.path.join(os.path.dirname(path), settings[name])
    return settings


# ----------------------------------------------------------------------------------------------------------------
# Run directories: numbered NNNNN-description folders under a results directory, each with config.json and snapshots

RUN_DIR_NAME = re.compile(r'^\d{5}-')


def find_latest_snapshot(outdir, position_of, pattern):
    """The snapshot that got furthest (largest position_of(file name); None for other files) in the newest run under
    `outdir` that has one; `pattern` shows the snapshot names in the message when no run has any."""
    if not os.path.isdir(outdir):
        raise UserError('%s: no such results directory to resume from' % outdir)
    for run in sorted((d for d in os.listdir(outdir) if RUN_DIR_NAME.match(d)), reverse=True):
        run_dir = os.path.join(outdir, run)
        snapshots = [(position_of(name), name) for name in os.listdir(run_dir)
                     if position_of(name) is not None] if os.path.isdir(run_dir) else []
        if snapshots:
            return os.path.join(run_dir, max(snapshots)[1])
    raise UserError('%s: no %s in any run to resume from' % (outdir, pattern))
