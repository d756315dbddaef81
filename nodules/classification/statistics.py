"""How well a classifier tells the classes apart, and whether one way of training it beats another.

Metrics of one test fold (NumPy): confusion matrix, accuracy, balanced accuracy (mean per-class sensitivity),
per-class sensitivity and specificity (one class against the rest), ROC curves and the area under them (the
Mann-Whitney statistic, ties counted one half), macro one-vs-rest AUC.  Summaries over folds x repeats: mean and
sample standard deviation.

Paired comparison of two arms evaluated on the same folds: the corrected resampled t-test of Nadeau and Bengio
(2003), in the repeated k-fold form of Bouckaert and Frank (2004).  The J = folds x repeats differences d_j are not
independent (training sets overlap), so the variance of their mean is taken as (1/J + n_test/n_train) s^2 rather
than s^2 / J; the 95% interval is mean +- t(0.975, J - 1) * sqrt((1/J + n_test/n_train) s^2), with Student's t distribution
from scipy.stats.

Reports: results as JSON-ready dicts, a Markdown table, and matplotlib figures (Agg backend, PNG bytes).
"""
import io
import math

import numpy as np

# ----------------------------------------------------------------------------------------------------------------
# Metrics of one set of predictions


def confusion_matrix(true_labels, predicted_labels, num_classes):
    """int64 [classes, classes]: rows are the true classes, columns the predicted ones."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(true_labels, np.int64), np.asarray(predicted_labels, np.int64)), 1)
    return matrix


def average_ranks(values):
    """Ranks 1..n of `values`, tied values sharing the mean of their ranks."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind='mergesort')
    sorted_values = values[order]
    ranks = np.empty(len(values), np.float64)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(sorted_values)) + 1, [len(values)]])
    for start, stop in zip(starts[:-1], starts[1:]):
        ranks[order[start:stop]] = 0.5 * (start + 1 + stop)
    return ranks


def roc_auc(is_positive, scores):
    """Area under the ROC curve: the chance that a random positive scores above a random negative (ties count
    one half).  None when either side is empty."""
    is_positive = np.asarray(is_positive, bool)
    positives, negatives = int(is_positive.sum()), int((~is_positive).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = average_ranks(scores)
    return float((ranks[is_positive].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def roc_curve(is_positive, scores):
    """(false positive rates, true positive rates) from the strictest threshold to the loosest, starting at (0, 0)
    and ending at (1, 1); tied scores make one step."""
    is_positive = np.asarray(is_positive, bool)
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind='mergesort')
    scores, is_positive = scores[order], is_positive[order]
    last_of_tie = np.concatenate([np.flatnonzero(np.diff(scores)), [len(scores) - 1]])
    true_positives = np.cumsum(is_positive)[last_of_tie]
    false_positives = (last_of_tie + 1) - true_positives
    tpr = np.concatenate([[0.0], true_positives / float(max(is_positive.sum(), 1))])
    fpr = np.concatenate([[0.0], false_positives / float(max((~is_positive).sum(), 1))])
    return fpr, tpr


def classification_metrics(true_labels, probabilities, class_names):
    """Metrics of one test fold: predictions are the most probable class; AUCs use the class probabilities."""
    true_labels = np.asarray(true_labels, np.int64)
    probabilities = np.asarray(probabilities, np.float64)
    num_classes = len(class_names)
    matrix = confusion_matrix(true_labels, np.argmax(probabilities, axis=1), num_classes)
    total = matrix.sum()
    per_class = {}
    sensitivities, aucs = [], []
    for c, name in enumerate(class_names):
        true_positive = matrix[c, c]
        false_negative = matrix[c].sum() - true_positive
        false_positive = matrix[:, c].sum() - true_positive
        true_negative = total - true_positive - false_negative - false_positive
        sensitivity = _ratio(true_positive, true_positive + false_negative)
        specificity = _ratio(true_negative, true_negative + false_positive)
        auc = roc_auc(true_labels == c, probabilities[:, c])
        per_class[name] = {'sensitivity': sensitivity, 'specificity': specificity, 'auc': auc,
                           'patches': int(matrix[c].sum())}
        if sensitivity is not None:
            sensitivities.append(sensitivity)
        if auc is not None:
            aucs.append(auc)
    return {
        'accuracy': _ratio(np.trace(matrix), total),
        'balanced_accuracy': float(np.mean(sensitivities)) if sensitivities else None,
        'auc_macro': float(np.mean(aucs)) if aucs else None,
        'per_class': per_class,
        'confusion_matrix': matrix.tolist(),
    }


def _ratio(numerator, denominator):
    return float(numerator) / float(denominator) if denominator else None


# ----------------------------------------------------------------------------------------------------------------
# Summaries over folds x repeats

SCALAR_METRICS = ('accuracy', 'balanced_accuracy', 'auc_macro')
PER_CLASS_METRICS = ('sensitivity', 'specificity', 'auc')


def mean_sd(values):
    """{'mean', 'sd', 'n'} of the defined values (sample standard deviation; 0 for a single value)."""
    values = np.asarray([v for v in values if v is not None], np.float64)
    if len(values) == 0:
        return {'mean': None, 'sd': None, 'n': 0}
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {'mean': float(np.mean(values)), 'sd': sd, 'n': int(len(values))}


def summarize(fold_metrics, class_names):
    """Mean and sd of every metric over a list of classification_metrics dicts, plus the summed confusion matrix."""
    summary = {name: mean_sd([m[name] for m in fold_metrics]) for name in SCALAR_METRICS}
    summary['per_class'] = {
        c: {name: mean_sd([m['per_class'][c][name] for m in fold_metrics]) for name in PER_CLASS_METRICS}
        for c in class_names}
    summary['confusion_matrix'] = np.sum([m['confusion_matrix'] for m in fold_metrics], axis=0).tolist()
    return summary


# ----------------------------------------------------------------------------------------------------------------
# Student's t distribution and the paired comparison


def student_t_cdf(t, df):
    """P(T <= t) for Student's t distribution with `df` degrees of freedom."""
    from scipy import stats  # here, not at the top: importing scipy.stats takes about half a second
    return float(stats.t.cdf(t, df))


def student_t_quantile(probability, df):
    """The t with P(T <= t) = probability."""
    from scipy import stats
    if not 0.0 < probability < 1.0:
        raise ValueError('probability must be strictly between 0 and 1, got %r' % probability)
    return float(stats.t.ppf(probability, df))


def corrected_paired_t(differences, test_train_ratio, confidence=0.95):
    """Mean of paired differences over folds x repeats with the corrected resampled t interval and two-sided
    p-value (see the module docstring).  `test_train_ratio` is n_test / n_train of the folds."""
    differences = np.asarray(differences, np.float64)
    count = len(differences)
    result = {'mean_difference': float(np.mean(differences)) if count else None, 'units': count,
              'wins': int(np.sum(differences > 0)), 'ties': int(np.sum(differences == 0)),
              'losses': int(np.sum(differences < 0)), 'ci95': None, 'p_value': None, 't': None,
              'test_train_ratio': float(test_train_ratio)}
    if count < 2:
        return result
    variance = (1.0 / count + test_train_ratio) * np.var(differences, ddof=1)
    half_width = student_t_quantile(0.5 + confidence / 2.0, count - 1) * math.sqrt(variance)
    result['ci95'] = [result['mean_difference'] - half_width, result['mean_difference'] + half_width]
    if variance > 0:
        t = result['mean_difference'] / math.sqrt(variance)
        result['t'] = float(t)
        result['p_value'] = float(2.0 * (1.0 - student_t_cdf(abs(t), count - 1)))
    else:  # every fold gave the same difference: no spread to test against
        result['p_value'] = 1.0 if result['mean_difference'] == 0 else 0.0
    return result


def compare_arms(fold_metrics_by_arm, arms, test_train_ratio, metric='balanced_accuracy'):
    """Every later arm against every earlier one in `arms` (b - a), paired by fold and repeat."""
    comparisons = []
    for i, baseline in enumerate(arms):
        for arm in arms[i + 1:]:
            pairs = [(a[metric], b[metric]) for a, b in zip(fold_metrics_by_arm[baseline], fold_metrics_by_arm[arm])
                     if a[metric] is not None and b[metric] is not None]
            result = corrected_paired_t([b - a for a, b in pairs], test_train_ratio)
            result.update({'arm': arm, 'baseline': baseline, 'metric': metric})
            comparisons.append(result)
    return comparisons


# ----------------------------------------------------------------------------------------------------------------
# Reports

ARM_DESCRIPTIONS = {
    'none': 'real patches only',
    'classic': 'real patches, random flips, 90-degree rotations and shifts',
    'gan': 'real patches plus generated ones',
    'classic+gan': 'real plus generated patches, with flips, rotations and shifts',
    'synthetic': 'generated patches only (classification accuracy score)',
}


def _format(summary, digits=3):
    if summary['mean'] is None:
        return 'n/a'
    return '%.*f ± %.*f' % (digits, summary['mean'], digits, summary['sd'])


def markdown_report(results):
    """results.md: one row per arm (mean ± sd over folds x repeats), then the paired comparisons."""
    classes = results['classes']
    settings = results['settings']
    lines = ['# Subtype classification: %s' % ' / '.join(classes), '',
             '%d-fold cross-validation grouped by nodule and stratified by class, %d repeat(s); mean ± sd over '
             'the %d folds x repeats.  Sensitivity and specificity are per class (one against the rest).'
             % (settings['folds'], settings['repeats'], settings['folds'] * settings['repeats']), '']
    header = ['arm', 'accuracy', 'balanced accuracy', 'macro AUC']
    header += ['sensitivity %s' % c for c in classes] + ['specificity %s' % c for c in classes]
    lines += ['| %s |' % ' | '.join(header), '|' + ' --- |' * len(header)]
    for arm, entry in results['arms'].items():
        summary = entry['summary']
        row = ['`%s`' % arm] + [_format(summary[m]) for m in SCALAR_METRICS]
        row += [_format(summary['per_class'][c]['sensitivity']) for c in classes]
        row += [_format(summary['per_class'][c]['specificity']) for c in classes]
        lines.append('| %s |' % ' | '.join(row))
    lines += [''] + ['- `%s`: %s' % (arm, ARM_DESCRIPTIONS[arm]) for arm in results['arms']]
    if results['comparisons']:
        lines += ['', '## Paired comparisons (balanced accuracy, same folds)', '',
                  'Difference b − a per fold and repeat; 95% interval and p-value of the corrected resampled '
                  't-test (Nadeau and Bengio), which allows for the overlap of training sets between folds.', '',
                  '| b − a | mean difference | 95% interval | p | folds b better / equal / worse |',
                  '| --- | --- | --- | --- | --- |']
        for c in results['comparisons']:
            interval = '[%+.3f, %+.3f]' % tuple(c['ci95']) if c['ci95'] else 'n/a'
            p = ('%.3f' % c['p_value'] if c['p_value'] >= 0.001 else '< 0.001') if c['p_value'] is not None \
                else 'n/a'
            lines.append('| `%s` − `%s` | %+.3f | %s | %s | %d / %d / %d |' % (
                c['arm'], c['baseline'], c['mean_difference'], interval, p, c['wins'], c['ties'], c['losses']))
    return '\n'.join(lines) + '\n'


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')  # files only: no display needed, and the same pixels everywhere
    import matplotlib.pyplot as plt
    return plt


def _png_bytes(figure):
    buffer = io.BytesIO()
    # No software/date metadata, so the same results give the same bytes.
    figure.savefig(buffer, format='png', dpi=100, metadata={'Software': None})
    _pyplot().close(figure)
    return buffer.getvalue()


def _panels(plt, count, width, height, columns=3):
    """A figure with `count` panels, at most `columns` to a row; returns (figure, the panels in order)."""
    columns = min(count, columns)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows + 0.4), squeeze=False)
    axes = list(axes.ravel())
    for ax in axes[count:]:
        ax.axis('off')
    return figure, axes[:count]


def roc_figure(pooled, class_names, arms):
    """PNG: one panel per arm, one one-vs-rest ROC curve per class from the out-of-fold predictions pooled over
    folds and repeats.  `pooled[arm]` = (true labels, probabilities)."""
    plt = _pyplot()
    figure, axes = _panels(plt, len(arms), 4.0, 4.3)
    for ax, arm in zip(axes, arms):
        labels, probabilities = pooled[arm]
        for c, name in enumerate(class_names):
            fpr, tpr = roc_curve(labels == c, probabilities[:, c])
            auc = roc_auc(labels == c, probabilities[:, c])
            ax.plot(fpr, tpr, drawstyle='steps-post', label='%s (AUC %s)' % (name, '%.3f' % auc if auc is not None
                                                                           else 'n/a'))
        ax.plot([0, 1], [0, 1], color='0.7', linestyle=':', linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect('equal')
        ax.set_title(arm)
        ax.set_xlabel('1 − specificity')
        ax.set_ylabel('sensitivity')
        ax.legend(loc='lower right', fontsize='small')
    figure.suptitle('One-vs-rest ROC, out-of-fold predictions pooled over folds and repeats')
    figure.tight_layout()
    return _png_bytes(figure)


def confusion_figure(matrices, class_names, arms):
    """PNG: one panel per arm, the confusion matrix summed over folds and repeats, coloured by row share."""
    plt = _pyplot()
    figure, axes = _panels(plt, len(arms), 3.6, 3.9)
    for ax, arm in zip(axes, arms):
        matrix = np.asarray(matrices[arm], np.float64)
        shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap='Blues', vmin=0, vmax=1)
        for (row, col), count in np.ndenumerate(matrix):
            ax.text(col, row, '%d\n%.0f%%' % (count, 100 * shares[row, col]), ha='center', va='center',
                    fontsize='small', color='white' if shares[row, col] > 0.6 else 'black')
        ticks = np.arange(len(class_names))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xticklabels(class_names)
        ax.set_yticklabels(class_names)
        ax.set_xlabel('predicted')
        ax.set_ylabel('true')
        ax.set_title(arm)
    figure.suptitle('Confusion matrices (counts and row shares) over all test folds')
    figure.tight_layout()
    return _png_bytes(figure)
