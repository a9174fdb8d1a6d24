"""The TPU path: the training step is one TensorFlow graph with no host-only operation
(``tf.py_function`` / ``tf.numpy_function``), so it can run on a TPU (or under XLA).

The step's graph is traced for each of its paths (loss level, shared variables, shared
representation, rewritten representation gradients); every balancer's source is scanned for
host-only calls (tracing all the balancers' steps would cost ~25 s for the same answer).
"""

import inspect
import pathlib
import re

import keras
import pytest
import tensorflow as tf

from mtl_keras import balancing
from mtl_keras.training import MultiTaskModel
from mtl_keras.training import model as model_module
from tests.utils import micro_network, tiny_specs

TASKS = ("semseg", "depth", "normals")
HOST_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
HOST_CALLS = re.compile(r"py_function|numpy_function|\.numpy\(\)|np\.asarray\(|\.item\(\)")


def op_types(function) -> set[str]:
    """Every op type in a traced function, including its nested functions (loops, conds)."""
    graph = function.graph.as_graph_def()
    nested = [n.op for f in graph.library.function for n in f.node_def]
    return {n.op for n in graph.node} | set(nested)


def test_the_check_sees_host_ops():
    @tf.function
    def with_host(x):
        return tf.py_function(lambda v: v * 2, [x], tf.float32)

    assert HOST_OPS & op_types(with_host.get_concrete_function(tf.TensorSpec([], tf.float32)))


@pytest.mark.parametrize(
    "name,source",
    [
        ("fixed", "auto"),
        ("mgda", "shared"),
        ("mgda", "representation"),
        ("graddrop", "auto"),
        ("sdmgrad", "auto"),
        ("auto_lambda", "auto"),
    ],
)
def test_train_step_graph_has_no_host_ops(name, source):
    specs = tiny_specs(TASKS)
    model = MultiTaskModel(micro_network(TASKS), list(specs.values()), name, gradient_source=source)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.optimizer.build(model.trainable_variables)
    n = 2 * model.balancer.needs.batches  # mini-batches of 2
    images = tf.TensorSpec([n, 16, 16, 3], tf.uint8)
    labels = {
        t: tf.TensorSpec([n, 16, 16, s.label_channels], s.label_dtype) for t, s in specs.items()
    }
    step = tf.function(model.train_step).get_concrete_function((images, labels))
    assert not HOST_OPS & op_types(step)


def _code(path: pathlib.Path) -> str:
    """Source without docstrings and comments (examples there may call ``.numpy()``)."""
    text = re.sub(r'"""[\s\S]*?"""', "", path.read_text())
    return "\n".join(line.split("#")[0] for line in text.splitlines())


def test_balancer_and_trainer_sources_have_no_host_calls():
    package = pathlib.Path(inspect.getsourcefile(balancing)).parent
    trainer = pathlib.Path(inspect.getsourcefile(model_module)).parent
    step = ("model", "objective", "replicas", "precision", "step_logs", "subgraph", "adversarial")
    files = [
        *sorted(package.glob("*.py")),
        *(trainer / f"{name}.py" for name in step),  # the modules on the training step's path
        *sorted((trainer / "gradient_paths").glob("*.py")),
    ]
    assert len(files) > len(balancing.available())  # one module per method, and more
    offending = {str(f): HOST_CALLS.findall(_code(f)) for f in files}
    assert not {f: calls for f, calls in offending.items() if calls}
