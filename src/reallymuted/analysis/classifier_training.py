"""Training and scoring the background-activity classifier: the models, the metrics and the
paper's protocol (:func:`evaluate_protocol`) on windows cut by
:mod:`reallymuted.analysis.classifier`.

With :mod:`reallymuted.analysis.classifier_mlp` (the faster MLP fit it uses), the only modules
of the classifier that import scikit-learn, and so only the jobs that train (one per window
length; the attack's cross-validation) pay for importing it.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, precision_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from reallymuted.analysis.classifier import SIMPLICITY, SOURCE, grouped_split, read_minutes, windows
from reallymuted.analysis.classifier_mlp import mlp_batches_by_numpy_indexing
from reallymuted.io import write_csv

log = logging.getLogger(__name__)


# -- splits ----------------------------------------------------------------------------------


def random_window_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The authors' split: a stratified random share of the (overlapping) windows.

    Windows that share minutes with a training window land in validation, so this split
    measures memory of a recording rather than generalisation; kept only for comparison.
    A small set (captured telemetry) still gets at least one window of each class held out:
    the share is rounded up as scikit-learn rounds it, and raised to the number of classes.
    """
    index = np.arange(len(y))
    size = max(math.ceil(fraction * len(y)), len(set(y)))
    train, val = train_test_split(index, test_size=size, stratify=y, random_state=seed)
    return np.sort(train), np.sort(val)


# -- models ----------------------------------------------------------------------------------


def make_model(name: str, params: Mapping[str, Any], seed: int) -> BaseEstimator:
    """A fresh scikit-learn model; ``params`` go to the classifier (not the scaler).

    Single-threaded on purpose: Snakemake runs one job per window in parallel instead.
    """
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    if name == "majority":
        return DummyClassifier(strategy="most_frequent", **params)
    if name == "random_forest":
        return RandomForestClassifier(
            **{"n_estimators": 100, "random_state": seed, "n_jobs": 1, **params}
        )
    if name == "extra_trees":
        return ExtraTreesClassifier(
            **{"n_estimators": 100, "random_state": seed, "n_jobs": 1, **params}
        )
    if name == "gradient_boosting":
        return HistGradientBoostingClassifier(**{"random_state": seed, **params})
    if name == "logistic":
        model = LogisticRegression(**{"max_iter": 2000, **params})
        return Pipeline([("scale", StandardScaler()), ("model", model)])
    if name == "mlp":
        model = MLPClassifier(**{"max_iter": 500, "random_state": seed, **params})
        return Pipeline([("scale", StandardScaler()), ("model", model)])
    raise ValueError(f"unknown model {name!r}; known: {', '.join(SIMPLICITY)}")


def fit_model(
    name: str,
    params: Mapping[str, Any],
    seed: int,
    X: np.ndarray,
    y: np.ndarray,
    balance_classes: bool = True,
) -> BaseEstimator:
    """Fit a model; with ``balance_classes`` each class weighs the same in training, matching
    the macro metrics (the majority baseline stays a true majority vote)."""
    model = make_model(name, params, seed)
    kwargs: dict[str, Any] = {}
    if balance_classes and name != "majority":
        weight = compute_sample_weight("balanced", y)
        key = "model__sample_weight" if isinstance(model, Pipeline) else "sample_weight"
        kwargs[key] = weight
    with warnings.catch_warnings(), mlp_batches_by_numpy_indexing():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the grid decides, not the warning
        model.fit(X, y, **kwargs)
    return model


def param_grid(grid: Mapping[str, Sequence[Any]] | None) -> list[dict[str, Any]]:
    """All combinations of a ``{param: [values]}`` grid, in a fixed order (first = default)."""
    if not grid:
        return [{}]
    keys = sorted(grid)
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))
    ]


# -- metrics ---------------------------------------------------------------------------------


def macro_accuracy(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (balanced accuracy)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    recalls = [float(np.mean(y_pred[y_true == c] == c)) for c in np.unique(y_true)]
    return float(np.mean(recalls))


def macro_precision(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """Unweighted mean of per-class precision over every class that occurs in ``y_true`` or
    ``y_pred``; a class never predicted has precision 0 (``zero_division=0``)."""
    return float(precision_score(y_true, y_pred, average="macro", zero_division=0))


def weighted_precision(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """Per-class precision weighted by class support: what the authors' code printed."""
    return float(precision_score(y_true, y_pred, average="weighted", zero_division=0))


def confusion_rows(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str], **keys: Any
) -> list[dict[str, Any]]:
    """Tidy row-normalised confusion matrix; rows of classes absent from ``y_true`` are left
    out (their shares would be 0/0)."""
    counts = confusion_matrix(y_true, y_pred, labels=list(labels))
    rows = []
    for i, true in enumerate(labels):
        total = int(counts[i].sum())
        if total == 0:
            continue
        for j, predicted in enumerate(labels):
            rows.append(
                {
                    **keys,
                    "true_activity": true,
                    "predicted_activity": predicted,
                    "count": int(counts[i, j]),
                    "share": counts[i, j] / total,
                }
            )
    return rows


# -- protocol --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProtocolResult:
    """Everything one window length gives: metrics, confusion matrices and the grid search."""

    metrics: pd.DataFrame
    confusion: pd.DataFrame
    grid: pd.DataFrame


def protocol_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`evaluate_protocol` a ``classifier`` config section sets
    (the reference classifier's and the attack's, alike)."""
    return {
        "grids": settings.get("grids"),
        "validation_fraction": settings["validation_fraction"],
        "random_validation_fraction": settings["random_validation_fraction"],
        "balance_classes": settings["balance_classes"],
    }


def evaluate_protocol(
    dev_minutes: pd.DataFrame,
    eval_minutes: Mapping[str, pd.DataFrame],
    n: int,
    models: Sequence[str],
    seed: int,
    grids: Mapping[str, Mapping[str, Sequence[Any]]] | None = None,
    validation_fraction: float = 0.25,
    random_validation_fraction: float = 0.2,
    balance_classes: bool = True,
    labels: Sequence[str] | None = None,
    source: str = SOURCE,
) -> ProtocolResult:
    """The paper's protocol for one window length ``n``.

    For each model: pick hyper-parameters on a recording-grouped validation split of the
    development set (``validation_grouped``); with those, also train/test on the authors'
    random 80/20 split of overlapping windows (``validation_random_windows``, leaky by
    design); finally refit on the whole development set and test on each evaluation set
    (``eval_minutes``, e.g. ``{"eval1": ..., "eval2": ...}``). Nothing of an evaluation set is
    seen before its test.
    """
    grids = grids or {}
    dev = windows(dev_minutes, n)
    if len(dev.y) == 0:
        raise ValueError(f"no development windows of {n} minutes")
    evals = {name: windows(frame, n) for name, frame in eval_minutes.items()}
    if labels is None:
        labels = list(dict.fromkeys(dev.y))
    labels = [c for c in labels if c in set(dev.y) | {v for w in evals.values() for v in w.y}]
    train, val = grouped_split(dev.y, dev.groups, validation_fraction, seed)
    rtrain, rval = random_window_split(dev.y, random_validation_fraction, seed)
    log.info(
        "n=%d: %d dev windows (%d recordings; grouped split %d/%d windows), %s",
        n,
        len(dev.y),
        len(set(dev.groups)),
        len(train),
        len(val),
        ", ".join(f"{k} {len(w.y)} windows" for k, w in evals.items()),
    )
    metric_rows, confusion, grid_rows = [], [], []

    def record(model: str, eval_set: str, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        keys = {"source": source, "window": n, "model": model, "eval_set": eval_set}
        metric_rows.append(
            {
                **keys,
                "macro_accuracy": macro_accuracy(y_true, y_pred),
                "macro_precision": macro_precision(y_true, y_pred),
                "n_windows": len(y_true),
                "weighted_precision": weighted_precision(y_true, y_pred),
            }
        )
        confusion.extend(confusion_rows(y_true, y_pred, labels, **keys))

    for model in models:
        tried = []  # (params, validation predictions) per grid point, in grid order
        for params in param_grid(grids.get(model)):
            fitted = fit_model(model, params, seed, dev.X[train], dev.y[train], balance_classes)
            tried.append((params, fitted.predict(dev.X[val])))
        scores = [macro_accuracy(dev.y[val], pred) for _, pred in tried]
        chosen = int(np.argmax(scores))  # ties keep the earlier grid point
        for i, (params, pred) in enumerate(tried):
            grid_rows.append(
                {
                    "source": source,
                    "window": n,
                    "model": model,
                    "params": json.dumps(params, sort_keys=True),
                    "macro_accuracy": scores[i],
                    "macro_precision": macro_precision(dev.y[val], pred),
                    "selected": i == chosen,
                }
            )
        params, pred = tried[chosen]
        record(model, "validation_grouped", dev.y[val], pred)
        fitted = fit_model(model, params, seed, dev.X[rtrain], dev.y[rtrain], balance_classes)
        record(model, "validation_random_windows", dev.y[rval], fitted.predict(dev.X[rval]))
        fitted = fit_model(model, params, seed, dev.X, dev.y, balance_classes)
        for name, data in evals.items():
            if len(data.y):
                record(model, name, data.y, fitted.predict(data.X))
        log.info("n=%d %s: params %s", n, model, json.dumps(params, sort_keys=True))
    metrics = pd.DataFrame(metric_rows)
    return ProtocolResult(metrics, pd.DataFrame(confusion), pd.DataFrame(grid_rows))


# -- entry point for the workflow's script ---------------------------------------------------


def window_to_files(
    minutes_path: str | Path,
    n: int,
    settings: Mapping[str, Any],
    out: Mapping[str, str | Path],
    labels: Sequence[str] | None = None,
    threads: int = 1,
) -> None:
    """Rule classifier_window: the protocol for one window length on a per-minute table whose
    ``split`` column says ``dev`` / ``eval1`` / ``eval2``.

    ``settings`` holds ``models``, ``seed``, ``grids``, ``validation_fraction``,
    ``random_validation_fraction`` and ``balance_classes`` (the ``classifier`` config keys);
    ``labels`` are the class codes in display order. Native thread pools are capped at
    ``threads`` because Snakemake already runs one job per window in parallel.
    """
    from threadpoolctl import threadpool_limits

    minutes = read_minutes(minutes_path)
    source = str(minutes.source.iloc[0])
    eval_sets = [s for s in dict.fromkeys(minutes.split) if s != "dev"]
    with threadpool_limits(limits=threads):
        result = evaluate_protocol(
            minutes[minutes.split == "dev"],
            {s: minutes[minutes.split == s] for s in eval_sets},
            n,
            settings["models"],
            settings["seed"],
            **protocol_settings(settings),
            labels=labels,
            source=source,
        )
    write_csv(out["metrics"], result.metrics)
    write_csv(out["confusion"], result.confusion)
    write_csv(out["grid"], result.grid)
