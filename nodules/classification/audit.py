"""Did a per-fold generator copy its training nodules?  The memorization audit of 4-classify.py --gan-train.

For every fold and class, nodules/metrics/memorization.py (the one home of the audit) compares the distance from
each generated patch to the nearest patch the generator was trained on (the fold's training side of that class)
with the same distance from the fold's test patches of that class (real nodules the generator never saw).  It does
so in two spaces: pixels, and the penultimate features of the fold's classifier trained on real patches only (a
copy can hide from pixel distances behind a small shift, less so from features that ignore it).  The generated
patches are those the fold's gan arms train on.

  median_ratio     median d(generated) / median d(test): ~1 when the generator does not copy, << 1 when it does
  near_copy_share  share of generated patches closer to a training patch than 95% of the test patches are:
                   ~0.05 by chance, -> 1 for a generator that returns its training patches

A generator is flagged when its near-copy share reaches FLAGGED_SHARE in either space.
"""
import collections
import io

import numpy as np

from nodules.metrics import memorization

SPACES = ('pixels', 'features')
FLAGGED_SHARE = 0.5             # ten times the share of near copies expected by chance (5%): small test sets
                                # make the 5th percentile noisy, and shares of 0.3 came from draws that copy nothing
FEATURE_ARMS = ('none', 'classic')  # arms trained on real patches only: their features know no generated patch
FIGURE_GAP = 4                  # white rows between the generators' strips in memorization.png


def feature_arm(arms):
    """The arm whose classifier gives the audit's features: the first arm trained on real patches only, else
    the first arm."""
    real_only = [arm for arm in arms if arm in FEATURE_ARMS]
    return (real_only or list(arms))[0]


def audit_fold(data, plan, pool, counts, features=None):
    """Audit every class's generator of one fold.  pool: [uint8 patches per class] (its first counts[c] are the
    fold's generated patches of class c); features(images) -> [N, F] the classifier's penultimate features, or
    None for pixels only.  Returns [(entry, pairs PNG bytes)] per class, entry a JSON-ready dict."""
    train_side = np.concatenate([plan.fit, plan.validation])
    audited = []
    for c, name in enumerate(data.class_names):
        generated = pool[c][:counts[c]]
        training = data.images[train_side[data.labels[train_side] == c]]
        test = data.images[plan.test[data.labels[plan.test] == c]]
        spaces = collections.OrderedDict([('pixels', memorization.audit(generated, test, training))])
        if features is not None:
            spaces['features'] = memorization.audit(features(generated), features(test), features(training))
        entry = collections.OrderedDict([('repeat', plan.repeat), ('fold', plan.fold), ('class', name)])
        entry.update(spaces)
        entry['flagged'] = any(result['near_copy_share'] >= FLAGGED_SHARE for result in spaces.values())
        audited.append((entry, memorization.pairs_png(generated, training, spaces['pixels']['closest_pairs'])))
    return audited


def document(entries, arm):
    """The results' "memorization" entry: per generator and class, and the mean and sd over them."""
    from nodules.classification import statistics
    spaces = [space for space in SPACES if entries and space in entries[0]]
    summary = collections.OrderedDict(
        (space, collections.OrderedDict((measure, statistics.mean_sd([e[space][measure] for e in entries]))
                                        for measure in ('median_ratio', 'near_copy_share')))
        for space in spaces)
    return collections.OrderedDict([
        ('feature_space', 'penultimate features of the `%s` classifier of each fold' % arm),
        ('near_copy_percentile', memorization.NEAR_COPY_PERCENTILE),
        ('flagged_share', FLAGGED_SHARE),
        ('flagged', ['r%d-f%d %s' % (e['repeat'], e['fold'], e['class']) for e in entries if e['flagged']]),
        ('summary', summary),
        ('per_generator', entries)])


def pairs_figure(strips):
    """memorization.png: the pairs PNG of every generator (memorization.pairs_png: its generated patches on top,
    the nearest training patch of each below), one strip under the other, in the order of the audit's table."""
    from PIL import Image
    from nodules.util import outputs
    images = [np.asarray(Image.open(io.BytesIO(png)).convert('L')) for png in strips]
    width = max(image.shape[1] for image in images)
    gap = np.full((FIGURE_GAP, width), 255, np.uint8)
    rows = []
    for image in images:
        rows += [np.pad(image, ((0, 0), (0, width - image.shape[1])), mode='constant'), gap]
    return outputs.png_bytes(np.concatenate(rows[:-1]))


def markdown(memorization_document):
    """Lines of results.md about the audit."""
    doc = memorization_document
    entries = doc['per_generator']
    spaces = list(doc['summary'])
    lines = ['## Memorization audit of the per-fold generators', '',
             'Distance d from each patch to the nearest patch its generator was trained on (the fold\'s training '
             'nodules of the class): generated patches against the fold\'s test patches of the class, nodules the '
             'generator never saw. Median ratio ~1 and near-copy share ~%.2f (closer than %g%% of the test patches '
             'are) mean no copying; a ratio well below 1 and a share near 1 mean copies. A generator is flagged at a '
             'share of %.2f or more. Features: %s. `memorization.png` shows each generator\'s 8 closest pairs in '
             'pixels (generated above, training below), in the order of this table.'
             % (doc['near_copy_percentile'] / 100.0, 100 - doc['near_copy_percentile'], doc['flagged_share'],
                doc['feature_space']), '']
    header = ['repeat', 'fold', 'class'] + ['%s: %s' % (space, measure) for space in spaces
                                            for measure in ('median ratio', 'near-copy share')] + ['flagged']
    lines += ['| %s |' % ' | '.join(header), '| %s |' % ' | '.join(['---'] * len(header))]
    for e in entries:
        cells = [str(e['repeat']), str(e['fold']), e['class']]
        cells += ['%.3f' % e[space][measure] for space in spaces for measure in ('median_ratio', 'near_copy_share')]
        lines.append('| %s |' % ' | '.join(cells + ['**yes**' if e['flagged'] else 'no']))
    summary = doc['summary']
    cells = ['all', '', '']
    cells += ['%.3f ± %.3f' % (summary[space][measure]['mean'], summary[space][measure]['sd'])
              for space in spaces for measure in ('median_ratio', 'near_copy_share')]
    lines.append('| %s |' % ' | '.join(cells + [str(len(doc['flagged']))]))
    return lines
