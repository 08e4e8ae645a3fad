"""The notification service: versioned events that any process can send and listen to.

::

    from ultron_nb.events import send_event, latest, listen

    send_event(db, "model/ctr", {"version": 7, "auc": 0.74})
    latest(db, "model/ctr").value["auc"]
    for event in listen(db, "model/ctr", timeout=60):
        ...

The keys ultron itself uses, and the one vocabulary of node states, are in
:mod:`ultron_nb.events.keys`.
"""

from ultron_nb.events.listen import Listener, events_after, listen
from ultron_nb.events.send import (
    CHANNEL,
    DEFAULT_NAMESPACE,
    Event,
    append_event,
    decode_value,
    encode_value,
    get_event,
    last_event_id,
    latest,
    recent,
    send_event,
)

__all__ = [
    "CHANNEL",
    "DEFAULT_NAMESPACE",
    "Event",
    "Listener",
    "append_event",
    "decode_value",
    "encode_value",
    "events_after",
    "get_event",
    "last_event_id",
    "latest",
    "listen",
    "recent",
    "send_event",
]
