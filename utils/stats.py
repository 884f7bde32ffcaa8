"""Statistics of the tables: per-task means and paired differences over the runs, and Student-t intervals over
tasks. One implementation, used by every table and figure."""
import math

import numpy as np

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_quantile(samples):
    """Student t's 97.5% quantile for a 95% interval over `samples` values (2 or more)."""
    return T975[max(d for d in T975 if d <= samples - 1)]


def mean_ci95(values):
    """Mean and half-width of the 95% confidence interval (Student t); the half-width is nan for one value."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(t_quantile(len(v)) * v.std(ddof=1) / math.sqrt(len(v)))


def per_task(runs, method, shots, baseline=None):
    """{task: mean over its seeds} of final accuracy (%), or with `baseline` of the paired difference (points)
    accuracy - baseline's accuracy over the (task, seed) runs both have. The seeds of one task share its images,
    so they are averaged first and the tasks are the independent samples an interval is taken over."""
    by_task = {}
    for key, r in runs.items():
        if key.method != method or key.shots != shots:
            continue
        if baseline is None:
            by_task.setdefault(key.task, []).append(r["final_acc"])
        elif key._replace(method=baseline) in runs:
            by_task.setdefault(key.task, []).append(r["final_acc"] - runs[key._replace(method=baseline)]["final_acc"])
    return {t: float(np.mean(v)) for t, v in sorted(by_task.items())}




def curve(runs, method, shots):
    """(epochs, mean, ci95) of test accuracy (%) at each evaluated epoch over tasks, the seeds of a task averaged
    first (as per_task does for the final accuracy); None if the method has no run at that shot count."""
    by_task = {}
    for key, r in runs.items():
        if key.method == method and key.shots == shots:
            by_task.setdefault(key.task, []).append(r["curve"])
    if not by_task:
        return None
    length = min(len(c) for curves in by_task.values() for c in curves)
    epochs = [row[0] for row in next(iter(by_task.values()))[0][:length]]
    accuracy = np.array([np.mean([[row[3] for row in c[:length]] for c in curves], axis=0)
                         for curves in by_task.values()])  # [tasks, epochs]
    mean, ci = zip(*(mean_ci95(accuracy[:, j]) for j in range(length)))
    return epochs, np.array(mean), np.array(ci)
