"""The Jupyter server extension: ultron's HTTP API for the JupyterLab side panel.

Installing the wheel enables it (``etc/jupyter/jupyter_server_config.d/ultron_nb.json``). Its
routes live under ``<base_url>ultron/api/`` and need the server's token (or its login cookie
plus the XSRF header), like every Jupyter API. Each handler makes one call into ultron_nb's
public API (:mod:`ultron_nb.server.api`), off the event loop and with a timeout, and answers
JSON (:mod:`ultron_nb.server.serialize`); a user's mistake answers 4xx ``{"error": "..."}``.

Settings (``jupyter server --UltronServer.read_timeout=5`` or a config file):
:class:`ultron_nb.server.app.UltronServer`.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from ultron_nb.server.app import UltronServer

    return [{"module": "ultron_nb.server", "app": UltronServer}]
