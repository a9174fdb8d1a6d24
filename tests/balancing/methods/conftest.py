"""A method's test class runs the state checks for its ``kwargs`` and each of its ``variants``."""


def _variant_id(variant: dict) -> str:
    return "-".join(f"{key}={value}" for key, value in variant.items())


def pytest_generate_tests(metafunc):
    if metafunc.cls is not None and "config" in metafunc.fixturenames:
        variants = [{}, *metafunc.cls.variants]
        ids = ["default", *map(_variant_id, metafunc.cls.variants)]
        metafunc.parametrize("config", variants, ids=ids)
