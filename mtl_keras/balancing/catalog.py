"""The table of balancing methods, generated from what each balancer declares.

Every column comes from the class: the level and the inputs from its :class:`~.base.Needs`, the
state from the variables a default instance creates, ``stochastic`` from its declaration, the
reference from the first paragraph of its docstring. ``docs/balancing.md`` holds the table between
two markers; ``python -m mtl_keras.balancing.catalog --write docs/balancing.md`` regenerates it and
a test checks that it is current.

Example:
    >>> describe("pcgrad")["cost"]
    'Gramian: T backward'
"""

from __future__ import annotations

import argparse
import inspect
import pathlib

from mtl_keras import balancing

BEGIN, END = "<!-- methods: begin (generated) -->", "<!-- methods: end -->"

#: the per-step cost of each (path, input), T tasks, P shared parameters, z the representation
COSTS = {
    ("loss", "losses"): "loss: 1 backward",
    ("shared", "gramian"): "Gramian: T backward",
    ("shared", "matrix"): "Jacobian: T backward + O(TP)",
    ("representation", "gramian"): "Gramian of z: T head backward + 1 backward",
    ("representation", "representation_gradients"): "z gradients: T head backward + 1 backward",
    ("multi_batch", "cross_gramians"): "cross Gramians: T backward per batch",
    ("bilevel", "lookahead"): "look-ahead: 3 forward + 3 backward + 1 second-order backward",
}
COLUMNS = ("name", "class", "level", "sources", "state", "stochastic", "batches/step", "cost")


def _state_size(cls: type[balancing.Balancer], num_params: int) -> int:
    b = cls()
    b.setup(["a", "b"])
    if b.level == "gradient":
        b.build_parameter_state([num_params])
    return sum(int(v.shape.num_elements()) for v in b.weights)


def describe(name: str) -> dict[str, str]:
    """One row of the table: what the default configuration of method ``name`` declares."""
    cls = balancing.BALANCERS[name]
    needs = cls().needs
    size = _state_size(cls, 4)
    state = "no" if size == 0 else "yes"
    if _state_size(cls, 5) > size:  # grows with the shared parameters
        state = "yes, T x P"
    cost = COSTS[next(iter(needs.paths.items()))]  # on the preferred path
    if needs.losses_after_step:
        cost += " + 1 forward (the same batch, after the update)"
    return {
        "name": f"`{name}`",
        "class": cls.__name__,
        "level": cls().level,
        "sources": "–" if "loss" in needs.paths else ", ".join(needs.paths),
        "state": state,
        "stochastic": "yes" if cls.stochastic else "no",
        "batches/step": str(getattr(needs, "batches", 1)),
        "cost": cost,
        "reference": " ".join(inspect.getdoc(cls).split("\n\n")[0].split()),
    }


def table() -> str:
    """The markdown table of every registered method, in registration order."""
    header = [*COLUMNS, "reference"]
    rows = [describe(name) for name in balancing.BALANCERS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[c].replace("|", "\\|") for c in header) + " |" for row in rows]
    return "\n".join(lines)


def replace_table(text: str) -> str:
    """``text`` with the table between :data:`BEGIN` and :data:`END` regenerated."""
    head, sep, rest = text.partition(BEGIN)
    _, sep_end, tail = rest.partition(END)
    if not sep or not sep_end:
        raise ValueError(f"the page has no {BEGIN} ... {END} markers around the methods table")
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", metavar="PAGE", help="regenerate the table in this page")
    args = parser.parse_args(argv)
    if args.write:
        page = pathlib.Path(args.write)
        page.write_text(replace_table(page.read_text()))
    else:
        print(table())


if __name__ == "__main__":
    main()
