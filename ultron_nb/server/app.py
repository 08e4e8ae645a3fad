"""The server extension's app: settings, routes, clean-up.

:class:`UltronServer` is a Jupyter ``ExtensionApp``: its settings are traitlets, so
``--UltronServer.flink_timeout=5`` and ``c.UltronServer.home = "..."`` in a Jupyter config
file work, and the server stops it on shutdown. What its handlers share is
:class:`ultron_nb.server.state.PanelState`.
"""

from __future__ import annotations

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from traitlets import Float, Int, Unicode

from ultron_nb.server.handlers import ROUTES
from ultron_nb.server.state import STATE_KEY, PanelState

API_PREFIX = "ultron/api"


class UltronServer(ExtensionApp):
    """ultron's Jupyter server extension: the side panel's API under ``<base_url>ultron/api/``."""

    name = "ultron_nb"
    load_other_extensions = True

    home = Unicode("", config=True,
                   help="ultron's home (metadata store and topics); default: the usual "
                        "resolution (ULTRON_HOME, pyproject.toml, <root_dir>/.ultron)")
    read_timeout = Float(5.0, config=True,
                         help="seconds a store-only request may take before it answers 504")
    flink_timeout = Float(8.0, config=True,
                          help="seconds a request that asks Flink may take before it answers "
                               "504 'Flink cluster at ... does not answer'")
    action_timeout = Float(180.0, config=True,
                           help="seconds an action (stop, resume, restart, clone) may take "
                                "before the request answers 504 (the action goes on)")
    model_timeout = Float(20.0, config=True,
                          help="seconds a model-center request may take before it answers 504 "
                               "(the first one in a server imports MLflow)")
    live_interval = Float(1.0, config=True,
                          help="seconds between background status refreshes of an experiment "
                               "a panel has open")
    live_max_age = Float(5.0, config=True,
                         help="oldest status (seconds) a request answers without waiting for "
                              "a fresh one")
    live_idle = Float(30.0, config=True,
                      help="seconds after the last request before an experiment is no longer "
                           "refreshed")
    store_threads = Int(4, config=True, help="worker threads for store-only requests")
    flink_threads = Int(8, config=True, help="worker threads for requests that ask Flink")

    state: PanelState | None = None

    def initialize_settings(self) -> None:
        assert self.serverapp is not None
        self.state = PanelState(self, str(self.serverapp.root_dir))
        self.settings[STATE_KEY] = self.state
        self.log.info("ultron_nb: side panel API at %s",
                      url_path_join(self.serverapp.base_url, API_PREFIX, ""))

    def initialize_handlers(self) -> None:
        self.handlers.extend((url_path_join(API_PREFIX, path), handler)
                             for path, handler in ROUTES)

    async def stop_extension(self) -> None:
        if self.state is not None:
            self.state.close()
