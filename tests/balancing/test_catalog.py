"""The methods table of docs/balancing.md is the one the balancers' declarations give."""

import pathlib

from mtl_keras.balancing import catalog

PAGE = pathlib.Path(__file__).parents[2] / "docs" / "balancing.md"


def test_the_methods_page_is_current():
    text = PAGE.read_text()
    assert catalog.replace_table(text) == text, (
        "docs/balancing.md lists other methods or declarations than the balancers do; run "
        "`python -m mtl_keras.balancing.catalog --write docs/balancing.md`"
    )


def test_rows_come_from_the_declarations():
    assert catalog.describe("pcgrad") | {"reference": ""} == {
        "name": "`pcgrad`",
        "class": "PCGrad",
        "level": "gradient",
        "sources": "shared, representation",
        "state": "no",
        "stochastic": "yes",
        "batches/step": "1",
        "cost": "Gramian: T backward",
        "reference": "",
    }
    assert catalog.describe("db_mtl")["state"] == "yes, T x P"
    assert catalog.describe("famo")["cost"].endswith(
        "+ 1 forward (the same batch, after the update)"
    )
    assert catalog.describe("graddrop")["cost"].startswith("z gradients")
