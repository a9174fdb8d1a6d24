"""The two balancing interfaces.

A *loss-level* balancer turns the vector of task losses into one scalar objective (one backward
pass). A *gradient-level* balancer receives the per-task gradients of the shared part of the
network, either of the shared variables (``"shared"``) or of the shared representation
(``"representation"``, the "-UB" trick of Sener & Koltun, NeurIPS 2018), and returns one update.

Balancers get everything they need as arguments and keep their state in their own Keras
variables: they are ``keras.layers.Layer`` objects so a model that owns one saves, restores and
mirrors that state with its own weights. They never read trainer attributes.

Each method declares what it works on in one place, its :class:`Needs`: for every gradient path
it can run on (``"loss"``, ``"shared"``, ``"representation"``, in order of preference) the input
it receives there: the losses (:meth:`LossBalancer.combine`), the Gramian
(:meth:`GradientBalancer.weights_from_gramian`), the (T, P) matrix
(:meth:`GradientBalancer.aggregate`) or the per-task representation gradients
(:meth:`GradientBalancer.representation_gradients`). The trainer reads that declaration once,
when it chooses the gradient path, and nothing else.

Most gradient methods are *weights from the Gramian*: the update is ``w^T J`` where ``w`` is a
function of ``G = J J^T`` (and possibly the losses). Those implement
:meth:`GradientBalancer.weights_from_gramian`; the trainer then never materialises the (T, P)
Jacobian. Methods that must see the vectors themselves override :meth:`GradientBalancer.aggregate`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import keras
import tensorflow as tf

from mtl_keras.balancing._checks import checked_jacobian, finite_jacobian

#: gradient paths, and the inputs a balancer can receive on them
PATH_INPUTS = {
    "loss": ("losses",),
    "shared": ("gramian", "matrix"),
    "representation": ("gramian", "representation_gradients"),
    "multi_batch": ("cross_gramians",),
    "bilevel": ("lookahead",),
}


@dataclasses.dataclass(frozen=True)
class Needs:
    """What a balancer works on: its one declaration to the trainer.

    Attributes:
        paths: ``{path: input}`` in order of preference. Paths: ``"loss"`` (one backward pass of
            the combined objective), ``"shared"`` (per-task gradients of the shared variables),
            ``"representation"`` (per-task gradients of the shared representation),
            ``"multi_batch"`` (per-task gradients of the shared variables on each of several
            mini-batches), ``"bilevel"`` (the losses, and a look-ahead on a held-out mini-batch
            that meta-learns the weights: Auto-Lambda). Inputs: ``"losses"``, ``"gramian"``,
            ``"matrix"``, ``"representation_gradients"``, ``"cross_gramians"``, ``"lookahead"``.
        losses_after_step: the losses of the same batch are evaluated again after the update
            and given to :meth:`Balancer.after_step` (FAMO).
        batches: independent mini-batches a training step consumes (1 but on the
            ``"multi_batch"`` path, whose balancer gets the cross Gramians of ``batches >= 2``
            mini-batches, :meth:`GradientBalancer.weights_from_gramians`, and 2 on the
            ``"bilevel"`` path: a training and a held-out mini-batch). The step's batch then
            holds ``batches`` mini-batches of the recipe's ``batch_size``.

    Example:
        >>> Needs({"shared": "matrix"}).paths
        {'shared': 'matrix'}
        >>> Needs({"multi_batch": "cross_gramians"}, batches=3).batches
        3
    """

    paths: Mapping[str, str]
    losses_after_step: bool = False
    batches: int = 1

    def __post_init__(self):
        object.__setattr__(self, "paths", dict(self.paths))
        for path, given in self.paths.items():
            if path not in PATH_INPUTS:
                raise ValueError(f"unknown gradient path {path!r}; valid: {', '.join(PATH_INPUTS)}")
            if given not in PATH_INPUTS[path]:
                raise ValueError(
                    f"path {path!r} gives a balancer one of {PATH_INPUTS[path]}, not {given!r}"
                )
        if "loss" in self.paths and len(self.paths) > 1:
            raise ValueError("a balancer works on the losses or on gradients, not both")
        multi = "multi_batch" in self.paths
        if multi and len(self.paths) > 1:
            raise ValueError("a multi-batch balancer runs on the multi_batch path only")
        if multi and not (isinstance(self.batches, int) and self.batches >= 2):
            raise ValueError(
                f"batches={self.batches!r}: the multi_batch path takes an integer >= 2 "
                "mini-batches per step"
            )
        if "bilevel" in self.paths:
            if len(self.paths) > 1 or self.batches != 2:
                raise ValueError(
                    f"a bilevel balancer runs on the bilevel path only, on 2 mini-batches per "
                    f"step (got paths {list(self.paths)}, batches={self.batches!r})"
                )
        elif not multi and self.batches != 1:
            raise ValueError(
                f"batches={self.batches!r}: only the multi_batch path takes several mini-batches "
                "per step; declare Needs({'multi_batch': 'cross_gramians'}, batches=...)"
            )


class Balancer(keras.layers.Layer):
    """Common base: knows its task names once :meth:`setup` has run."""

    #: what the method works on (see :class:`Needs`); the only thing the trainer reads
    needs: Needs = Needs({"loss": "losses"})
    #: whether the method draws random numbers (from ``(seed, step)``; it then takes ``seed``)
    stochastic: bool = False

    @property
    def level(self) -> str:
        """``"loss"`` or ``"gradient"`` (derived from :attr:`needs`; a bilevel balancer weighs
        the losses)."""
        return "loss" if {"loss", "bilevel"} & set(self.needs.paths) else "gradient"

    @property
    def sources(self) -> tuple[str, ...]:
        """The gradient paths the method runs on, in order of preference."""
        return tuple(self.needs.paths)

    @property
    def needs_losses_after_step(self) -> bool:
        return self.needs.losses_after_step

    def __init__(self, name: str | None = None, **kwargs):
        super().__init__(name=name, trainable=kwargs.pop("trainable", True), **kwargs)
        self.task_names: tuple[str, ...] = ()

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def stateful(self) -> bool:
        """Whether the balancer keeps state across steps: it owns Keras variables.

        A stateful balancer is bound to the task count it was set up for (its variables have that
        shape); a stateless one accepts any number of tasks on every call, as TorchJD's
        aggregators do. Known once :meth:`setup` (and, for state that follows the shared
        variables, :meth:`GradientBalancer.build_parameter_state`) has run.
        """
        return bool(self.weights)

    def setup(self, task_names) -> None:
        """Create the state for these tasks; call once, inside the distribution scope."""
        self.task_names = tuple(task_names)
        self.build_state(len(self.task_names))
        self.built = True

    def build_state(self, num_tasks: int) -> None:  # noqa: B027 - optional hook
        """Create Keras variables holding the method's state (none by default)."""

    def add_state(self, name: str, shape, initializer="zeros", dtype: str = "float32"):
        """A non-trainable state variable that every replica updates with the same value.

        State is computed from all-reduced inputs, so the first replica's value is the value of
        all of them (``aggregation="only_first_replica"`` lets replicas assign it in a
        ``tf.distribute`` replica context).
        """
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=initializer,
            dtype=dtype,
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )

    # ------------------------------------------------------------------ trainer hooks
    def on_epoch_end(self) -> None:  # noqa: B027 - optional hook
        """Called by the trainer at the end of every training epoch (e.g. DWA's epoch form)."""

    def after_step(self, losses_before, losses_after, step) -> None:  # noqa: B027
        """Called after the optimizer step when ``needs.losses_after_step`` is True.

        Args:
            losses_before: (T,) the all-reduced losses the step was computed from.
            losses_after: (T,) the all-reduced losses of the same batch after the update.
            step: the optimizer's iteration counter.
        """

    def get_config(self) -> dict:
        return {"name": self.name}


class LossBalancer(Balancer):
    """Maps task losses to a scalar objective."""

    needs = Needs({"loss": "losses"})

    def combine(self, losses: tf.Tensor, global_losses: tf.Tensor, step: tf.Tensor):
        """Return ``(objective, weights)``.

        Args:
            losses: (T,) differentiable task losses of this replica's batch.
            global_losses: (T,) the same losses averaged over all replicas, without gradient; any
                weight that depends on loss values must be computed from these so that every
                replica uses the same weights.
            step: the optimizer's iteration counter.

        Returns:
            ``objective``: scalar to differentiate (the trainer divides it by the replica count);
            ``weights``: (T,) the effective task weights, for logging.
        """
        raise NotImplementedError


class GradientBalancer(Balancer):
    """Maps per-task gradients of the shared part to one update."""

    needs = Needs({"shared": "gramian", "representation": "gramian"})

    # Note: not called ``weights``: that name is keras.layers.Layer's list of variables.
    def weights_from_gramian(
        self, gramian: tf.Tensor, losses: tf.Tensor, step: tf.Tensor
    ) -> tf.Tensor:
        """(T,) weights ``w`` such that the update is ``sum_i w_i g_i``, from ``G = J J^T``.

        Return ``None``-raising NotImplementedError for methods that need the Jacobian itself.
        """
        raise NotImplementedError

    def weights_from_gramians(
        self, gramians: tf.Tensor, losses: tf.Tensor, step: tf.Tensor
    ) -> tf.Tensor:
        """(k, T) weights ``W`` such that the update is ``sum_a sum_i W[a, i] g_{a,i}``, from the
        cross Gramians of ``k = needs.batches`` independent mini-batches (the ``"multi_batch"``
        path: SDMGrad, MoDo).

        Args:
            gramians: (k, k, T, T), ``gramians[a, b] = J_a J_b^T`` with ``J_a`` the (T, P)
                per-task gradients of the shared variables on mini-batch ``a`` (global: summed
                over replicas).
            losses: (k, T) all-reduced task losses of each mini-batch.
            step: the optimizer's iteration counter.
        """
        raise NotImplementedError(f"{type(self).__name__} does not take several mini-batches")

    @property
    def gramian_based(self) -> bool:
        """Whether the method is weights from the Gramian on every path it runs on."""
        return all(given == "gramian" for given in self.needs.paths.values())

    def build_parameter_state(self, sizes) -> None:  # noqa: B027 - optional hook
        """Create state that depends on the flat Jacobian's columns (e.g. DB-MTL's buffer).

        Args:
            sizes: number of elements of each shared variable, in the order in which their
                flattened gradients are concatenated into the (T, P) Jacobian. Called once, in
                the distribution scope, when the gradient source is ``"shared"``.
        """

    def head_weights(self, losses: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        """(T,) weights of the task-specific gradients for methods using :meth:`aggregate`.

        Also what the trainer logs as task weights. Ones unless the method says otherwise.
        """
        return tf.ones_like(tf.cast(losses, tf.float32))

    def representation_gradients(self, task_grads, representations, losses, step, replica_sum=None):
        """Map per-task gradients of the shared representation to the gradient to back-propagate.

        Args:
            task_grads: list over representation tensors of (T, *rep.shape) per-task gradients.
            representations: the representation tensors (this replica's batch).
            losses: (T,) all-reduced task losses.
            step: the optimizer's iteration counter.
            replica_sum: callable summing a tensor over replicas (identity when not distributed).

        Returns:
            list of tensors shaped like ``representations``.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not transform representation gradients"
        )

    #: the Jacobian columns the state of :meth:`build_parameter_state` holds (None: none yet)
    num_params: int | None = None

    def _prepare_parameter_aggregate(self, jacobian, losses, step, held: str):
        """:meth:`_prepare_aggregate` for a method with state per Jacobian column: that state is
        built for the Jacobian's columns on first use, and a Jacobian with another column count
        is refused (``held`` names the state in the error: "DB-MTL's buffer holds")."""
        j32, losses, step = self._prepare_aggregate(jacobian, losses, step)
        if self.num_params is None:
            self.build_parameter_state([j32.shape[1]])
        if j32.shape[1] != self.num_params:
            raise ValueError(
                f"{held} {self.num_params} parameters but the Jacobian has {j32.shape[1]} "
                "columns; call build_parameter_state with the shared variables' sizes"
            )
        return j32, losses, step

    def _prepare_aggregate(self, jacobian, losses, step):
        """Validate a (T, P) Jacobian, set up tasks on first use, default losses and step.

        A stateless balancer is set up again for another row count (any T on every call); a
        stateful one refuses a row count other than the one it holds state for.

        The Jacobian is checked by `mtl_keras.balancing._checks`: floating point, (T, P) with
        T >= 1, finite.
        """
        jacobian = checked_jacobian(jacobian)
        rows = jacobian.shape[0]
        if self.task_names and rows is not None and rows != self.num_tasks and self.stateful:
            raise ValueError(
                f"{type(self).__name__} keeps state for the {self.num_tasks} tasks it was set up "
                f"for ({list(self.task_names)}) and cannot take a Jacobian with {rows} rows; make "
                f"a new balancer for {rows} tasks (stateless methods accept any number of rows)"
            )
        if not self.task_names or (rows is not None and rows != self.num_tasks):  # (re)set up
            self.setup([f"task_{i}" for i in range(rows)])
        j32 = finite_jacobian(tf.cast(jacobian, tf.float32), type(self).__name__, self.task_names)
        if losses is None:
            losses = tf.ones([tf.shape(j32)[0]], tf.float32)
        if step is None:
            step = tf.constant(0, tf.int64)
        return j32, tf.cast(losses, tf.float32), step

    def aggregate(
        self, jacobian: tf.Tensor, losses: tf.Tensor | None = None, step: tf.Tensor | None = None
    ) -> tf.Tensor:
        """Combine a (T, P) matrix of per-task gradients into the (P,) update.

        Usable on its own, outside any model: ``get("mgda").aggregate(J)``.
        """
        jacobian = tf.convert_to_tensor(jacobian)
        j32, losses, step = self._prepare_aggregate(jacobian, losses, step)
        w = self.weights_from_gramian(tf.matmul(j32, j32, transpose_b=True), losses, step)
        return tf.cast(tf.linalg.matvec(j32, w, transpose_a=True), jacobian.dtype)
