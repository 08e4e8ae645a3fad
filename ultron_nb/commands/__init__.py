"""The ONE verb registry that the ``%ultron`` magic and the ``ultron`` CLI both build from.

Every verb's flags and its one call into the API live in the modules of this package (one per
area); :mod:`ultron_nb.commands.registry` holds the registry itself. A command's
``run(face, args, body)`` returns an object that shows itself (text, HTML, a DataFrame).
"""

from ultron_nb.commands import events, experiments, flows, history, models, runtime
from ultron_nb.commands.registry import (
    COMMANDS,
    Command,
    Face,
    Run,
    build_parser,
    command,
    flow_of,
    help_text,
)

__all__ = ["COMMANDS", "Command", "Face", "Run", "build_parser", "command", "flow_of",
           "help_text"]
_VERB_MODULES = (events, experiments, flows, history, models, runtime)  # each registers its verbs
