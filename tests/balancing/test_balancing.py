"""The registry, the shared numerics, and that every registered method has its test class."""

import importlib
import pkgutil

import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from tests.balancing import methods
from tests.balancing.properties import GradientMethod, Method


def _method_test_classes() -> dict[str, list[type]]:
    for module in pkgutil.iter_modules(methods.__path__):
        if module.name.startswith("test_"):
            importlib.import_module(f"{methods.__name__}.{module.name}")
    found, pending = {}, list(Method.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "name" in vars(cls):
            found.setdefault(cls.name, []).append(cls)
    return found


def test_every_registered_method_has_one_test_class_of_its_level():
    classes = _method_test_classes()
    missing = sorted(set(balancing.available()) - set(classes))
    assert not missing, (
        f"no test class for {missing}: add tests/balancing/methods/test_<name>.py with a class "
        "built from tests.balancing.properties (Method or GradientMethod and the claims it makes)"
    )
    assert sorted(classes) == balancing.available(), "test classes of unregistered methods"
    for name, (cls, *others) in classes.items():
        assert not others, f"{name} has several test classes: {[cls, *others]}"
        gradient = balancing.get(name).level == "gradient"
        assert issubclass(cls, GradientMethod) == gradient, cls


def test_registry():
    assert {"fixed", "mgda"} <= set(balancing.available())
    with pytest.raises(ValueError, match="valid balancers: .*fixed.*mgda"):
        balancing.get("mgda_ub_typo")


def test_aggregate_rejects_non_matrix():
    with pytest.raises(ValueError, match=r"\(T, P\) Jacobian"):
        balancing.get("mgda").aggregate(tf.zeros([3]))


def test_statistics_of_the_gramian():
    jac = np.array([[1.0, 0.0], [-1.0, 1.0], [0.0, 0.0]], np.float32)
    stats = balancing.gramian_statistics(tf.matmul(jac, jac, transpose_b=True))
    np.testing.assert_allclose(stats["norms"], [1.0, np.sqrt(2.0), 0.0], rtol=1e-6)
    np.testing.assert_allclose(stats["cosine"][0, 1], -1 / np.sqrt(2.0), rtol=1e-6)
    assert int(stats["conflicts"]) == 1 and float(stats["cosine"][2, 2]) == 0.0
