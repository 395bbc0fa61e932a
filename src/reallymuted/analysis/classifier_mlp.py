"""A faster fit of scikit-learn's MLPClassifier that gives bit for bit the same weights.

While a fit runs, :func:`mlp_batches_by_numpy_indexing` swaps the per-batch work of
scikit-learn's MLP (taking rows, products, the ReLU derivative, the loss, the backward pass and
Adam's steps) for plain NumPy over one flat buffer of parameters and one of gradients.
:func:`~reallymuted.analysis.classifier_training.fit_model` fits every model inside it. It lives
apart from the training protocol because it patches scikit-learn's internals rather than
carrying the paper's method; tests compare its fits with scikit-learn's own, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from scipy.special import xlogy
from sklearn.neural_network import _multilayer_perceptron as mlp_module


@contextmanager
def mlp_batches_by_numpy_indexing() -> Iterator[None]:
    """While fitting, the MLP's hot loop skips scikit-learn's checks meant for other inputs.

    scikit-learn's MLP takes every mini-batch with ``sklearn.utils._safe_indexing``, which
    first asks narwhals whether X is a dataframe (about 70 µs a batch; its MLPs run about
    29,000 batches of 200 windows for n = 3); every product of its forward and backward pass
    goes through ``safe_sparse_dot``, which asks for an array namespace and sparseness before
    it computes ``a @ b``; and the ReLU derivative sets ``delta[Z == 0] = 0`` by boolean
    indexing (a masked write: about 80 µs for 200 x 64, branchy). For NumPy arrays these are
    ``X[rows]``, ``a @ b``, and, for a finite delta, multiplying by ``Z != 0`` and adding +0
    (which turns the -0 of a negative entry times 0 into the +0 the masked write puts): the
    same numbers, so the same fit (a test compares the fitted weights bit for bit). The
    weighted log loss of each batch is ``np.average``'s arithmetic without its checks, and
    Adam's step updates its moment arrays in place instead of allocating new ones. Each
    epoch's shuffle of the sample indices is ``resample``'s draw without its checks.

    For the networks fitted here (Adam, ReLU, softmax, log loss, NumPy float64 inputs and
    weights) ``_backprop`` is written out in one function: the same operations in the same
    order, except that the softmax's row maxima are taken column by column (a maximum is
    exact) and the gradients are written into one flat buffer of which they are views, as the
    coefficients and intercepts become views of another; Adam then takes each of its steps
    once over all parameters (its arithmetic is element by element, so the same numbers) where
    scikit-learn loops over the layers, about 60 small operations a batch fewer for two hidden
    layers. Anything else still goes through scikit-learn's functions, and a scikit-learn
    whose MLP lacks these names is left as it is.
    """
    safe_indexing = getattr(mlp_module, "_safe_indexing", None)
    safe_dot = getattr(mlp_module, "safe_sparse_dot", None)
    derivatives = getattr(mlp_module, "DERIVATIVES", None)
    relu_derivative = derivatives.get("relu") if isinstance(derivatives, dict) else None
    losses = getattr(mlp_module, "LOSS_FUNCTIONS", None)
    log_loss = losses.get("log_loss") if isinstance(losses, dict) else None
    perceptron = getattr(mlp_module, "BaseMultilayerPerceptron", None)
    own_backprop = getattr(perceptron, "__dict__", {}).get("_backprop")
    own_shuffle = getattr(mlp_module, "shuffle", None)
    if None in (safe_indexing, safe_dot, relu_derivative, log_loss, own_backprop, own_shuffle):
        yield
        return

    def shuffle(*arrays: Any, random_state: Any = None, n_samples: Any = None) -> Any:
        # sklearn.utils.shuffle of the epoch's sample indices is resample(replace=False):
        # np.arange(n) shuffled in place by the model's RandomState, then the indices taken
        # in that order; the same draw without resample's checks (once per epoch)
        (array,) = arrays if len(arrays) == 1 else (None,)
        plain = type(array) is np.ndarray and array.ndim == 1 and n_samples is None
        if not plain or type(random_state) is not np.random.RandomState:
            return own_shuffle(*arrays, random_state=random_state, n_samples=n_samples)
        order = np.arange(array.shape[0])
        random_state.shuffle(order)
        return array[order]

    def take_rows(X: Any, indices: Any, *, axis: int = 0) -> Any:
        plain = type(X) is np.ndarray and isinstance(indices, np.ndarray)
        if plain and axis == 0 and X.ndim == 2 and indices.dtype.kind in "iu":
            return X[indices]
        return safe_indexing(X, indices, axis=axis)

    def dot(a: Any, b: Any, **kwargs: Any) -> Any:
        if type(a) is np.ndarray and type(b) is np.ndarray and a.ndim == 2 and b.ndim == 2:
            return a @ b
        return safe_dot(a, b, **kwargs)

    def relu_delta(Z: Any, delta: Any) -> None:
        plain = type(Z) is np.ndarray and type(delta) is np.ndarray and Z.shape == delta.shape
        if plain and delta.dtype == np.float64 and np.isfinite(delta).all():
            np.multiply(delta, Z != 0, out=delta)  # finite x: x * 1 == x, x * 0 == ±0
            delta += 0.0  # -0 + 0 == +0: the +0 that delta[Z == 0] = 0 writes
        else:
            relu_derivative(Z, delta)

    def weighted_log_loss(y_true: Any, y_prob: Any, sample_weight: Any = None) -> Any:
        arrays = (y_true, y_prob, sample_weight)
        if not all(type(a) is np.ndarray for a in arrays) or y_prob.dtype != np.float64:
            return log_loss(y_true, y_prob, sample_weight)
        n, k = y_prob.shape if y_prob.ndim == 2 else (0, 1)
        if k < 2 or y_true.shape != (n, k) or sample_weight.shape != (n,):
            return log_loss(y_true, y_prob, sample_weight)
        eps = np.finfo(y_prob.dtype).eps
        terms = xlogy(y_true, np.clip(y_prob, eps, 1 - eps))
        weight = sample_weight.reshape(n, 1)  # np.average's weights along axis 0
        total = weight.sum(axis=(0,), dtype=np.float64)
        if terms.dtype != np.float64 or sample_weight.dtype != np.float64 or total[0] == 0.0:
            return log_loss(y_true, y_prob, sample_weight)
        return -(np.multiply(terms, weight, dtype=np.float64).sum((0,)) / total).sum()

    adam = mlp_module.AdamOptimizer
    own_update = adam.__dict__.get("update_params")  # None: inherited from BaseOptimizer
    adam_update = adam.update_params
    flat: dict[int, _FlatParameters] = {}  # id of a network being fitted -> its buffers

    def backprop(
        self: Any,
        X: Any,
        y: Any,
        sample_weight: Any,
        activations: list[Any],
        deltas: list[Any],
        coef_grads: list[Any],
        intercept_grads: list[Any],
    ) -> Any:
        arrays = [X, y, sample_weight, *self.coefs_, *self.intercepts_]
        usual = (
            self.solver != "adam"
            or type(getattr(self, "_optimizer", None)) is not adam
            or self.activation != "relu"
            or self.out_activation_ != "softmax"
            or self.loss != "log_loss"
            or not all(type(a) is np.ndarray for a in arrays)
            or not all(a.dtype == np.float64 for a in (X, sample_weight, *self.coefs_))
            or X.ndim != 2
            or sample_weight.shape != (X.shape[0],)
        )
        if usual:
            return own_backprop(
                self, X, y, sample_weight, activations, deltas, coef_grads, intercept_grads
            )
        state = _FlatParameters.of(self, flat)
        # BaseMultilayerPerceptron._backprop with its forward pass, the softmax, the loss and
        # _compute_loss_grad written out, the gradients written into one flat buffer
        # (state.grads) so that Adam updates every parameter with one operation per step
        last = self.n_layers_ - 2
        for i in range(last + 1):
            activations[i + 1] = activations[i] @ self.coefs_[i]
            activations[i + 1] += self.intercepts_[i]
            if i != last:
                np.maximum(activations[i + 1], 0, out=activations[i + 1])  # inplace_relu
        out = activations[-1]  # inplace_softmax; its row maxima column by column (exact,
        peak = out[:, 0].copy()  # so the same numbers; a third of max(axis=1)'s time)
        for column in range(1, out.shape[1]):
            np.maximum(peak, out[:, column], out=peak)
        tmp = out - peak[:, np.newaxis]
        np.exp(tmp, out=out)
        out /= out.sum(axis=1)[:, np.newaxis]
        loss = weighted_log_loss(y, out, sample_weight)
        values = 0
        for s in self.coefs_:
            s = s.ravel()
            values += np.dot(s, s)
        sw_sum = sample_weight.sum()
        loss += (0.5 * self.alpha) * values / sw_sum
        deltas[last] = out - y
        deltas[last] *= sample_weight.reshape(-1, 1)
        for layer in range(last, -1, -1):
            if layer != last:
                deltas[layer] = deltas[layer + 1] @ self.coefs_[layer + 1].T
                relu_delta(activations[layer + 1], deltas[layer])
            grad = state.coef_grads[layer]
            np.matmul(activations[layer].T, deltas[layer], out=grad)
            grad += self.alpha * self.coefs_[layer]
            grad /= sw_sum
            np.divide(np.sum(deltas[layer], axis=0), sw_sum, out=state.intercept_grads[layer])
        coef_grads[:] = state.coef_grads
        intercept_grads[:] = state.intercept_grads
        return loss, coef_grads, intercept_grads

    def adam_update_params(self: Any, params: list[Any], grads: list[Any]) -> None:
        state = next((s for s in flat.values() if s.owns(grads)), None)
        if type(self) is adam and state is not None:
            # The parameters are views of state.params (params holds the arrays they
            # replaced), the gradients of state.grads: each step below is one operation on
            # all of them, element for element the arithmetic of the loop further down
            moment, second = state.moments(self)
            self.t += 1
            moment *= self.beta_1
            moment += (1 - self.beta_1) * state.grads
            second *= self.beta_2
            second += (1 - self.beta_2) * (state.grads**2)
            self.learning_rate = (
                self.learning_rate_init
                * np.sqrt(1 - self.beta_2**self.t)
                / (1 - self.beta_1**self.t)
            )
            scale = np.sqrt(second)
            scale += self.epsilon
            update = -self.learning_rate * moment
            update /= scale
            state.params += update
            return None
        arrays = [*params, *grads, *self.ms, *self.vs]
        if type(self) is not adam or not all(type(a) is np.ndarray for a in arrays):
            return adam_update(self, params, grads)
        # AdamOptimizer._get_updates, its moments updated in place: b * m + (1 - b) * g
        # is m * b, then + (1 - b) * g, the same two roundings
        self.t += 1
        for m, v, grad in zip(self.ms, self.vs, grads, strict=True):
            m *= self.beta_1
            m += (1 - self.beta_1) * grad
            v *= self.beta_2
            v += (1 - self.beta_2) * (grad**2)
        self.learning_rate = (
            self.learning_rate_init * np.sqrt(1 - self.beta_2**self.t) / (1 - self.beta_1**self.t)
        )
        for param, m, v in zip(params, self.ms, self.vs, strict=True):
            scale = np.sqrt(v)
            scale += self.epsilon
            update = -self.learning_rate * m
            update /= scale
            param += update
        return None

    mlp_module._safe_indexing = take_rows
    mlp_module.shuffle = shuffle
    mlp_module.safe_sparse_dot = dot
    derivatives["relu"] = relu_delta
    losses["log_loss"] = weighted_log_loss
    adam.update_params = adam_update_params
    perceptron._backprop = backprop
    try:
        yield
    finally:
        perceptron._backprop = own_backprop
        flat.clear()
        mlp_module._safe_indexing = safe_indexing
        mlp_module.shuffle = own_shuffle
        mlp_module.safe_sparse_dot = safe_dot
        derivatives["relu"] = relu_derivative
        losses["log_loss"] = log_loss
        if own_update is None:
            del adam.update_params
        else:
            adam.update_params = own_update


class _FlatParameters:
    """An MLP's coefficients and intercepts as views of one array (``params``), their
    gradients as views of another (``grads``), in the order of scikit-learn's ``params``
    list (coefs_ + intercepts_), and Adam's moments likewise once it has taken them over."""

    def __init__(self, model: Any) -> None:
        arrays = [*model.coefs_, *model.intercepts_]
        self.params = np.concatenate([a.ravel() for a in arrays])
        self.grads = np.zeros_like(self.params)
        self.shapes = [a.shape for a in arrays]
        self.moment: np.ndarray | None = None
        self.second: np.ndarray | None = None
        params, grads = self.views(self.params), self.views(self.grads)
        layers = len(model.coefs_)
        model.coefs_[:], model.intercepts_[:] = params[:layers], params[layers:]
        self.coef_grads, self.intercept_grads = grads[:layers], grads[layers:]

    def views(self, buffer: np.ndarray) -> list[np.ndarray]:
        ends = np.cumsum([math.prod(shape) for shape in self.shapes]).tolist()
        starts = [0, *ends[:-1]]
        return [
            buffer[a:b].reshape(shape)
            for a, b, shape in zip(starts, ends, self.shapes, strict=True)
        ]

    @classmethod
    def of(cls, model: Any, registry: dict[int, _FlatParameters]) -> _FlatParameters:
        """The model's buffers, made (its current values copied in) on its first batch."""
        state = registry.get(id(model))
        arrays = [*model.coefs_, *model.intercepts_]
        if state is None or not state.owns(arrays, state.params):
            state = registry[id(model)] = cls(model)
        return state

    def owns(self, arrays: list[Any], buffer: np.ndarray | None = None) -> bool:
        """Whether ``arrays`` are this network's gradients (or views of ``buffer``)."""
        buffer = self.grads if buffer is None else buffer
        return len(arrays) == len(self.shapes) and all(
            type(a) is np.ndarray and a.base is buffer and a.shape == shape
            for a, shape in zip(arrays, self.shapes, strict=True)
        )

    def moments(self, optimizer: Any) -> tuple[np.ndarray, np.ndarray]:
        """Adam's moment arrays as two flat arrays (its ms and vs become their views)."""
        if (
            self.moment is None
            or self.second is None
            or optimizer.ms[0].base is not self.moment
            or optimizer.vs[0].base is not self.second
        ):
            self.moment = np.concatenate([m.ravel() for m in optimizer.ms])
            self.second = np.concatenate([v.ravel() for v in optimizer.vs])
            optimizer.ms, optimizer.vs = self.views(self.moment), self.views(self.second)
        return self.moment, self.second
