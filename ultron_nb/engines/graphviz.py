"""Turning DOT text into SVG with graphviz's ``dot`` program."""

from __future__ import annotations

import shutil

from ultron_nb.errors import ConfigError

INSTALL_HINT = "install graphviz: apt-get install -y graphviz (or: brew install graphviz)"


def dot_to_svg(dot: str) -> str:
    """Render DOT text to an SVG document."""
    if shutil.which("dot") is None:
        raise ConfigError(f"graphviz's 'dot' program is not on PATH; {INSTALL_HINT}")
    import graphviz

    return graphviz.Source(dot).pipe(format="svg", encoding="utf-8")
