"""Registries accept the papers' spellings and aliases, and say which canonical name they took."""

import logging

import pytest

from mtl_keras import architectures, backbones, balancing, data, heads, recipes, tasks
from mtl_keras._names import canonical, spelling_key

REGISTRIES = {
    "architecture": (architectures.available(), architectures.ALIASES),
    "backbone": (backbones.available(), backbones.ALIASES),
    "balancer": (balancing.available(), balancing.ALIASES),
    "head": (heads.available(), heads.ALIASES),
    "dataset": (list(data.DATASETS), data.ALIASES),
    "recipe": (recipes.available(), {}),
}


@pytest.mark.parametrize("kind", REGISTRIES)
def test_spellings_are_unambiguous_and_aliases_point_at_registered_names(kind):
    names, aliases = REGISTRIES[kind]
    keys = [spelling_key(n) for n in [*names, *aliases]]
    assert len(keys) == len(set(keys)), f"two {kind} names differ only in case or separators"
    assert set(aliases.values()) <= set(names)


@pytest.mark.parametrize(
    ("kind", "typed", "name"),
    [
        ("architecture", "mti_net", "mtinet"),
        ("architecture", "MTI-Net", "mtinet"),
        ("architecture", "pad_net", "padnet"),
        ("architecture", "PAP-Net", "papnet"),
        ("architecture", "cross-stitch", "cross_stitch"),
        ("architecture", "nddr", "nddr_cnn"),
        ("architecture", "NDDR-CNN", "nddr_cnn"),
        ("backbone", "hrnet_w18", "hrnet18"),
        ("backbone", "ResNet-50", "resnet50"),
        ("balancer", "Nash-MTL", "nash_mtl"),
        ("balancer", "uw", "uncertainty"),
        ("head", "aspp", "deeplab"),
        ("dataset", "pascal", "pascal_context"),
        ("recipe", "MTI-Net_pascal", "mtinet_pascal"),
    ],
)
def test_papers_spellings_resolve_to_the_canonical_name(kind, typed, name, caplog):
    names, aliases = REGISTRIES[kind]
    with caplog.at_level(logging.INFO, logger="mtl_keras"):
        assert canonical(kind, typed, names, aliases) == name
    assert f"{kind} {typed!r} is {name!r}" in caplog.text


def test_unknown_name_suggests_the_closest_and_lists_the_valid_ones():
    with pytest.raises(ValueError, match="did you mean 'mtinet'.* valid architectures: .*padnet"):
        architectures.keyword_arguments("mtinett")
    with pytest.raises(ValueError, match="unknown balancer 'bogus'; valid balancers: "):
        balancing.get("bogus")


def test_lookup_functions_take_aliases():
    assert "backbone" in architectures.keyword_arguments("mti_net")
    assert type(balancing.get("Nash-MTL")) is balancing.NashMTL
    assert heads.get("ASPP") is heads.deeplab_head
    assert recipes.get("demo-mgda").name == "demo_mgda"


def test_task_names_stay_exact_but_the_error_names_the_task():
    with pytest.raises(ValueError, match="did you mean 'semseg'.* valid tasks: semseg, depth"):
        tasks.get("segmentation")
