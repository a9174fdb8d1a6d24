"""Name lookup shared by the registries: spellings from papers, aliases, errors that suggest.

A registry keeps its canonical names (``"mtinet"``, ``"hrnet18"``) and a dict of the aliases that
no spelling rule finds (``{"nddr": "nddr_cnn"}``). :func:`canonical` accepts a name written any
way that differs only in case, ``-``, ``_`` or spaces (``"MTI-Net"``, ``"mti_net"``,
``"cross-stitch"``), or an alias, and returns the canonical name; the ``mtl_keras`` logger says
which name was taken (``mtl-keras`` prints it). This module imports nothing heavy: the CLI uses it
before TensorFlow is loaded.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable, Mapping

logger = logging.getLogger("mtl_keras")


def spelling_key(name: str) -> str:
    """``name`` without case, ``-``, ``_`` or spaces: ``spelling_key("MTI-Net") == "mtinet"``."""
    return "".join(c for c in name.lower() if c.isalnum())


def _spellings(names: list[str], aliases: Mapping[str, str] | None) -> dict[str, str]:
    """``{spelling_key: canonical name}`` of the names and the aliases."""
    table = {spelling_key(n): n for n in names}
    table.update({spelling_key(a): c for a, c in (aliases or {}).items()})
    return table


def canonical(
    kind: str,
    name: str,
    names: Iterable[str],
    aliases: Mapping[str, str] | None = None,
    *,
    also: str = "",
) -> str:
    """The canonical name among ``names`` that ``name`` stands for.

    Args:
        kind: what is looked up, for the messages (``"architecture"``).
        name: what the user typed.
        names: the canonical names, in the order the error message lists them.
        aliases: ``{alias: canonical}`` for the spellings of papers that differ by more than case
            and separators (``{"hrnet_w18": "hrnet18"}``).
        also: appended as is to the list of valid names in the error (other accepted forms).

    Raises:
        ValueError: ``name`` matches nothing; the message lists the valid names and the closest.

    Example:
        >>> canonical("architecture", "MTI-Net", ["padnet", "mtinet"])
        'mtinet'
    """
    names = list(names)
    if name in names:
        return name
    table = _spellings(names, aliases)
    match = table.get(spelling_key(name))
    if match is not None:
        logger.info("%s %r is %r", kind, name, match)
        return match
    raise ValueError(unknown_message(kind, name, names, aliases, also=also))


def unknown_message(
    kind: str,
    name: str,
    names: Iterable[str],
    aliases: Mapping[str, str] | None = None,
    *,
    also: str = "",
) -> str:
    """``unknown <kind> 'x'; did you mean 'y'? valid <kind>s: ...``."""
    names = list(names)
    table = _spellings(names, aliases)
    close = difflib.get_close_matches(spelling_key(str(name)), table, n=3, cutoff=0.6)
    suggestions = list(dict.fromkeys(table[k] for k in close))
    hint = f" did you mean {' or '.join(map(repr, suggestions))}?" if suggestions else ""
    valid = ", ".join(names) + also
    return f"unknown {kind} {name!r};{hint} valid {kind}s: {valid}"


def aliases_of(name: str, aliases: Mapping[str, str]) -> list[str]:
    """The aliases that stand for ``name``."""
    return [a for a, c in aliases.items() if c == name]


def summary(doc: str | None) -> str:
    """The first paragraph of a docstring on one line, reST roles and literals unwrapped.

    Example:
        >>> summary("MTI-Net on NYUD-v2: as :mod:`.padnet_nyud`\\n  with ``MTI-Net``.\\n\\nMore.")
        'MTI-Net on NYUD-v2: as padnet_nyud with MTI-Net.'
    """
    paragraph = (doc or "").strip().split("\n\n")[0]
    paragraph = re.sub(r":\w+:`[~.]*([^`]+)`", r"\1", paragraph).replace("``", "")
    return " ".join(paragraph.split())
