"""Live views in the notebook: the watch widget and the bounded follow widget.

Both are built-in ipywidgets (``HTML`` values, a ``Button``) whose values are set from the
thread that has new data — never ``with out:`` from a thread. Each view shows itself as one
output holding the widget *and* a static rendering (``text/plain``, ``text/html`` with the
table and the DAG's SVG, ``image/svg+xml``), so nbconvert and plain IPython show the table and
the picture where no widget can live; the static part is brought up to date when the view
stops. Outside a kernel (plain IPython) nothing is live: a watch shows one snapshot, a follow
prints its rows as they arrive, as the CLI does.

The watch widget's refresh thread (:class:`~ultron_nb.experiments.watch.Watcher`) ends when
the experiment ends, when the widget is closed (its button or :meth:`WatchView.close`), and
while no view of it is on screen (a cleared output, a closed notebook tab: JupyterLab counts
the views); it starts again when a view comes back.
"""

from __future__ import annotations

import html
import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any

from ultron_nb.errors import UltronError
from ultron_nb.flow.render import STATUS_COLORS
from ultron_nb.views import Message

if TYPE_CHECKING:
    from ultron_nb.experiments.follow import Follow
    from ultron_nb.experiments.watch import Snapshot, Watcher

log = logging.getLogger(__name__)

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
#: At most this many rows are drawn by a follow view (the result keeps them all).
SHOWN_ROWS = 200


def in_kernel() -> bool:
    """Does this code run in a Jupyter kernel (where widgets can live)?"""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _svg_inline(svg: str) -> str:
    """An SVG document as an element to put in HTML (no XML prolog, no DOCTYPE)."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else ""


def _cell(value: Any) -> str:
    return html.escape("" if value is None else str(value))


# ---------------------------------------------------------------- watch
def snapshot_html(snap: Snapshot, *, ended: str = "") -> tuple[str, str, str]:
    """``(headline, node table, error line)`` of a snapshot, as HTML."""
    st = snap.status
    state = html.escape(st.state)
    head = (f'<div data-role="headline" data-state="{state}" data-refresh="{snap.number}">'
            f"experiment <b>{html.escape(st.name)}</b> — {html.escape(st.flow)} "
            f"v{st.flow_version} on {html.escape(st.cluster)}: <b>{state}</b> "
            f"<small>at {snap.when}{' — ' + html.escape(ended) if ended else ''}</small></div>")
    rows = []
    for n in st.nodes:
        colour = STATUS_COLORS.get(n.state, "#ffffff")
        count = snap.rows.get(n.node)
        rate = snap.rates.get(n.node)
        rows.append(
            f'<tr data-node="{_cell(n.node)}" data-state="{_cell(n.state)}">'
            f"<td>{_cell(n.node)}</td><td>{_cell(n.kind)}</td>"
            f'<td style="background:{colour}">{_cell(n.state)}</td>'
            f'<td class="ultron-wm">{_cell(n.watermark_text)}</td>'
            f'<td class="ultron-rows" style="text-align:right">{_cell(count)}</td>'
            f'<td class="ultron-rate" style="text-align:right">'
            f"{'' if rate is None else f'{rate:.1f}'}</td></tr>")
    table = ('<table class="ultron-watch" data-role="nodes"><thead><tr><th>node</th>'
             "<th>kind</th><th>state</th><th>watermark</th><th>rows</th><th>rows/s</th></tr>"
             f"</thead><tbody>{''.join(rows)}</tbody></table>")
    error = (f'<div data-role="error" style="color:#c92a2a">{html.escape(snap.error)} '
             f"(retrying in {snap.retry_in:.0f} s)</div>") if snap.error else \
        '<div data-role="error"></div>'
    return head, table, error


class WatchView:
    """``%ultron watch``: the live DAG and node table of one experiment."""

    def __init__(self, watcher: Watcher):
        self.watcher = watcher
        self.snapshot: Snapshot = watcher.latest or watcher.refresh()
        self.updates = 0  # snapshots drawn since the view was made
        self.closed = False
        self.ended = ""  # why the watch ended (shown in the headline)
        self._svg = ""
        self._decorations: Any = None
        self._lock = threading.Lock()
        self._handle: Any = None
        self._box: Any = None
        self._paused = False
        self._render_dag(self.snapshot)

    # ---------------------------------------------------------------- drawing
    def _render_dag(self, snap: Snapshot) -> None:
        from ultron_nb.services.live import live_decorations

        ws = self.watcher.ws
        st = snap.status
        try:
            flow = ws.flow(st.flow, st.flow_version)
            decorations = live_decorations(ws, flow, st)
            decorations["title"] = f"{flow.name} — experiment {st.name}"
            if decorations == self._decorations:
                return
            self._svg = ws.render(flow, "svg", **decorations)
            self._decorations = decorations
        except UltronError as exc:  # no graphviz, or the flow version is gone
            log.info("watch %s: no DAG: %s", st.name, exc)

    def _html(self) -> tuple[str, str, str]:
        return snapshot_html(self.snapshot, ended=self.ended)

    def static_html(self) -> str:
        head, table, error = self._html()
        return f'<div class="ultron-watch-static">{head}{_svg_inline(self._svg)}{table}' \
               f"{error}</div>"

    def __str__(self) -> str:
        return str(self.snapshot) + (f"\n({self.ended})" if self.ended else "")

    def __repr__(self) -> str:
        return str(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/plain": str(self), "text/html": self.static_html()}
        if self._svg:
            bundle["image/svg+xml"] = self._svg
        if self._box is not None and self.live:
            bundle[WIDGET_MIME] = {"version_major": 2, "version_minor": 0,
                                   "model_id": self._box.model_id}
        return bundle

    @property
    def live(self) -> bool:
        """Is the widget still part of the output? Once the watch has ended or was closed,
        the output is the static rendering alone (what nbconvert shows too)."""
        return not self.closed and not self.ended

    # ---------------------------------------------------------------- the widget
    def _build(self) -> None:
        import ipywidgets as w

        head, table, error = self._html()
        self._head = w.HTML(head)
        self._dag = w.HTML(_svg_inline(self._svg))
        self._table = w.HTML(table)
        self._error = w.HTML(error)
        self._button = w.Button(description="stop watching", icon="stop",
                                tooltip="end the refresh thread")
        self._button.on_click(lambda _b: self.close())
        self._box = w.VBox([self._head, self._dag, self._table,
                            w.HBox([self._button, self._error])])
        self._box.add_class("ultron-watch")
        self._box._view_count = 0  # JupyterLab counts the views shown: pause when none
        self._box.observe(self._views_changed, names="_view_count")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self._handle is not None:  # shown already: show it again (another view)
            display(self._repr_mimebundle_(), raw=True)
            return
        if in_kernel() and not self.snapshot.ended:
            self._build()
            self._handle = display(self._repr_mimebundle_(), raw=True, display_id=True)
            self._start()
        else:
            self._handle = display(self._repr_mimebundle_(), raw=True, display_id=True)

    def _start(self) -> None:
        if self.watcher.running:  # a paused thread still finishing its last refresh
            self.watcher.stop()
        self._paused = False
        self.watcher.start(self._on_snapshot, self._on_end)

    def _on_snapshot(self, snap: Snapshot) -> None:
        with self._lock:
            if self.closed:
                return
            self.snapshot = snap
            self._render_dag(snap)
            head, table, error = self._html()
            self._head.value = head
            self._table.value = table
            self._error.value = error
            svg = _svg_inline(self._svg)
            if self._dag.value != svg:
                self._dag.value = svg
            self.updates += 1

    def _on_end(self) -> None:
        with self._lock:
            if self._paused or self.closed:
                return
            snap = self.snapshot
            self.ended = ("the experiment " + snap.status.state) if snap.ended else \
                "watch ended"
            self._refresh_static()  # the output becomes the static rendering
            self._close_widgets()

    def _views_changed(self, change: dict[str, Any]) -> None:
        old, new = change.get("old") or 0, change.get("new") or 0
        if self.closed or self.ended:
            return
        if old > 0 and new == 0 and self.watcher.running:
            self._paused = True
            self.watcher.stop(timeout=0)  # the kernel does not wait for a refresh under way
        elif new > 0 and self._paused:
            self._start()

    def _refresh_static(self) -> None:
        if self._handle is not None:
            try:
                self._handle.update(self._repr_mimebundle_(), raw=True)
            except Exception as exc:  # the kernel is going away
                log.debug("watch: cannot update the display: %s", exc)

    @property
    def running(self) -> bool:
        """Is the refresh thread alive?"""
        return self.watcher.running

    def close(self) -> None:
        """Stop refreshing (the thread ends) and close the widget; the output keeps the last
        snapshot as a static table."""
        if self.closed:
            return
        self.watcher.stop()
        with self._lock:
            self.closed = True
            self.ended = self.ended or "closed"
            self._refresh_static()
            self._close_widgets()

    def _close_widgets(self) -> None:
        if self._box is not None:
            for widget in (self._head, self._dag, self._table, self._error, self._button,
                           self._box):
                widget.close()


_VIEWS: weakref.WeakKeyDictionary[Any, WatchView] = weakref.WeakKeyDictionary()


def view_of(watcher: Watcher) -> WatchView:
    """The watch view of ``watcher`` (one per watcher: showing it again adds a view)."""
    view = _VIEWS.get(watcher)
    if view is None:
        view = _VIEWS[watcher] = WatchView(watcher)
    return view


# ---------------------------------------------------------------- follow
def follow_html(follow: Follow) -> tuple[str, str]:
    """``(headline, rows table)`` of a follow, as HTML (at most :data:`SHOWN_ROWS` rows)."""
    rows = follow.table.rows
    shown = rows[-SHOWN_ROWS:] if follow.table.mode == "append" else rows[:SHOWN_ROWS]
    note = f" (showing {len(shown)})" if len(shown) < len(rows) else ""
    head = (f'<div data-role="headline" data-rows="{len(rows)}" '
            f'data-reason="{html.escape(follow.reason)}">{html.escape(follow.headline)}'
            f"{note}</div>")
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r) + "</tr>"
                   for r in shown)
    cols = "".join(f"<th>{_cell(c)}</th>" for c in follow.columns)
    table = (f'<table class="ultron-follow" data-role="rows"><thead><tr>{cols}</tr></thead>'
             f"<tbody>{body}</tbody></table>")
    return head, table


class FollowView:
    """``preview --follow`` / ``sql --follow``: the live, bounded result table."""

    def __init__(self, follow: Follow):
        self.follow = follow
        self._handle: Any = None
        self._box: Any = None

    def frame(self) -> Any:
        """The result as a DataFrame."""
        return self.follow.frame()

    def __str__(self) -> str:
        return str(self.follow)

    def __repr__(self) -> str:
        return str(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        head, table = follow_html(self.follow)
        bundle: dict[str, Any] = {"text/plain": str(self.follow), "text/html": head + table}
        if self._box is not None and not self.follow.done:  # static once it has ended
            bundle[WIDGET_MIME] = {"version_major": 2, "version_minor": 0,
                                   "model_id": self._box.model_id}
        return bundle

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self._handle is None:
            self._handle = display(self._repr_mimebundle_(), raw=True, display_id=True)

    def run(self) -> FollowView:
        """Follow in the foreground: a live widget in a kernel, printed rows elsewhere."""
        from IPython.display import display

        if not in_kernel():
            self.follow.run(self._print)
            return self
        import ipywidgets as w

        head, table = follow_html(self.follow)
        self._head, self._table = w.HTML(head), w.HTML(table)
        self._box = w.VBox([self._head, self._table])
        self._box.add_class("ultron-follow")
        self._handle = display(self._repr_mimebundle_(), raw=True, display_id=True)
        try:
            self.follow.run(self._draw)
        finally:
            self._handle.update(self._repr_mimebundle_(), raw=True)
            self._box.close()
            self._head.close()
            self._table.close()
        return self

    def _draw(self, follow: Follow) -> None:
        head, table = follow_html(follow)
        self._head.value = head
        if self._table.value != table:
            self._table.value = table

    def _print(self, follow: Follow) -> None:
        from IPython.display import display

        lines = follow.drain_lines()
        if follow.done:
            lines.append(follow.headline)
        if lines:
            display(Message(*lines))
