"""The notification service: versioned events that any process can send and listen to.

::

    from ultron_nb.events import send_event, latest, listen

    send_event(db, "model/ctr", {"version": 7, "auc": 0.74})
    latest(db, "model/ctr").value["auc"]
    for event in listen(db, "model/ctr", timeout=60):
        ...

Keys used by ultron itself: ``status/<experiment>/<node>`` (a node's state),
``watermark/<experiment>/<node>`` (a stream node's watermark, epoch milliseconds) and
``control/<experiment>`` (start/stop requests to the scheduler).
"""

from ultron_nb.events.service import (
    CHANNEL,
    DEFAULT_NAMESPACE,
    Event,
    Listener,
    append_event,
    decode_value,
    encode_value,
    events_after,
    get_event,
    last_event_id,
    latest,
    listen,
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
