/**
 * The ultron side panel: flows → experiments → nodes with live states and watermarks, the
 * DAG, Flink jobs with links, recent events, model versions, and the actions (stop, resume,
 * restart a node, clone, promote), each behind a confirmation dialog.
 *
 * It refreshes by polling the server extension, backing off while the server does not
 * answer, and picks up again when it is back (after a server restart, say). It holds no
 * kernel: a kernel restart changes nothing for it; experiments live in ultron's store.
 */
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import {
  api,
  ApiError,
  IEvent,
  IExperimentRow,
  IExperimentStatus,
  IFlowSummary,
  IInfo,
  IModel,
  INodeStatus,
  IQualityReport,
  ISavepoint
} from './api';
import {
  askClone,
  askPromote,
  confirmPlan,
  confirmRestart,
  confirmResume,
  confirmStop,
  el
} from './dialogs';

const INTERVAL_MS = 3000;
const MAX_BACKOFF_MS = 30000;
const ACTIVE = new Set(['running', 'created', 'initializing', 'scheduled', 'restarting', 'failing']);

export class UltronPanel extends Widget {
  constructor() {
    super();
    this.id = 'ultron-panel';
    this.addClass('ultron-panel');
    this.title.caption = 'ultron: experiments on Flink';
    const head = el('div', { class: 'ultron-head' });
    head.append(el('span', { class: 'ultron-title' }, 'ultron'), this.statusLine);
    this.node.append(
      head,
      this.errorLine,
      this.noticeLine,
      section('Flows and experiments', this.flowsBox),
      this.detailBox,
      section('Recent events', this.eventsBox),
      section('Models', this.modelsBox)
    );
    this.poll = new Poll({
      auto: true,
      factory: () => this.tick(),
      frequency: { interval: INTERVAL_MS, backoff: true, max: MAX_BACKOFF_MS },
      name: 'ultron:panel',
      standby: 'when-hidden'
    });
  }

  dispose(): void {
    this.poll.dispose();
    if (this.dagUrl) {
      URL.revokeObjectURL(this.dagUrl);
    }
    super.dispose();
  }

  /** Refresh now (after an action, or when the user asks). */
  refresh(): Promise<void> {
    return this.poll.refresh();
  }

  // ------------------------------------------------------------------ polling
  private async tick(): Promise<void> {
    try {
      if (!this.info) {
        this.info = await api.info();
      }
      const [flows, experiments, events] = await Promise.all([
        api.flows(),
        api.experiments(),
        api.events()
      ]);
      this.renderFlows(flows, experiments);
      this.renderEvents(events);
      if (this.ticks++ % 10 === 0) {
        void this.loadModels(); // MLflow may be slow (its first import): never holds a refresh
      }
      if (this.selected) {
        await this.loadDetail(this.selected);
      }
      this.statusLine.textContent = `connected · ${experiments.length} experiments · ${new Date().toLocaleTimeString()}`;
      this.statusLine.dataset.connected = 'true';
    } catch (reason) {
      const message = reason instanceof Error ? reason.message : String(reason);
      if (reason instanceof ApiError && reason.unreachable) {
        this.statusLine.textContent = 'Jupyter server not reachable — retrying';
        this.statusLine.dataset.connected = 'false';
        this.info = null;
      } else {
        this.showError(message);
      }
      throw reason; // the poll backs off
    }
  }

  private async loadDetail(name: string): Promise<void> {
    try {
      const st = await api.experiment(name);
      this.renderDetail(st);
      await this.loadDag(st);
      try {
        this.renderQuality(await api.quality(name));
      } catch (reason) {
        if (reason instanceof ApiError && reason.unreachable) {
          throw reason;
        }
        const message = reason instanceof Error ? reason.message : String(reason);
        this.qualityBox.replaceChildren(el('div', { class: 'ultron-muted' }, message));
      }
    } catch (reason) {
      if (reason instanceof ApiError && reason.unreachable) {
        throw reason;
      }
      // Flink does not answer, or the experiment is gone: say so where its detail was.
      const message = reason instanceof Error ? reason.message : String(reason);
      const box = el('div', { class: 'ultron-detail-error', 'data-role': 'detail-error' }, message);
      this.detailBox.replaceChildren(el('h3', {}, `experiment ${name}`), box);
    }
  }

  private async loadDag(st: IExperimentStatus): Promise<void> {
    const key = JSON.stringify([st.name, st.state, st.nodes.map(n => [n.state, n.watermark])]);
    if (key !== this.dagKey) {
      const svg = await api.dagSvg(st.flow, st.name);
      if (this.dagUrl) {
        URL.revokeObjectURL(this.dagUrl);
      }
      this.dagUrl = URL.createObjectURL(new Blob([svg], { type: 'image/svg+xml' }));
      this.dagKey = key;
    }
    const img = el('img', { class: 'ultron-dag', alt: `DAG of ${st.flow}`, 'data-role': 'dag' });
    img.src = this.dagUrl ?? '';
    this.dagBox.replaceChildren(img);
  }

  private async loadModels(): Promise<void> {
    try {
      this.renderModels(await api.models());
    } catch (reason) {
      // The model center's one line where the models were (the refresh goes on).
      const message = reason instanceof Error ? reason.message : String(reason);
      this.modelsBox.replaceChildren(el('div', { class: 'ultron-muted', 'data-role': 'models-error' }, message));
    }
  }

  // ------------------------------------------------------------------ rendering
  private colour(state: string): string {
    return this.info?.state_colors[state.toLowerCase()] ?? 'var(--jp-layout-color2)';
  }

  private badge(state: string): HTMLElement {
    const b = el('span', { class: 'ultron-state', 'data-state': state }, state);
    b.style.background = this.colour(state);
    return b;
  }

  private renderFlows(flows: IFlowSummary[], experiments: IExperimentRow[]): void {
    const byFlow = new Map<string, IExperimentRow[]>();
    for (const e of experiments) {
      byFlow.set(e.flow, [...(byFlow.get(e.flow) ?? []), e]);
    }
    const names = [...new Set([...flows.map(f => f.name), ...byFlow.keys()])];
    const out: HTMLElement[] = [];
    for (const name of names) {
      const f = flows.find(x => x.name === name);
      const li = el('div', { class: 'ultron-flow', 'data-flow': name });
      const title = el('div', { class: 'ultron-flow-name' });
      title.append(
        el('b', {}, name),
        el('span', { class: 'ultron-muted' }, f ? ` v${f.version} · ${f.nodes} nodes` : '')
      );
      li.append(title);
      for (const e of byFlow.get(name) ?? []) {
        const row = el('div', {
          class: 'ultron-exp' + (e.name === this.selected ? ' ultron-selected' : ''),
          'data-experiment': e.name,
          title: `target ${e.target}` + (e.parent ? ` · cloned from ${e.parent}` : '')
        });
        row.append(
          this.badge(e.state),
          el('span', { class: 'ultron-exp-name' }, e.name),
          el('span', { class: 'ultron-muted' }, e.parent ? ` ← ${e.parent}` : '')
        );
        row.onclick = () => this.select(e.name);
        li.append(row);
      }
      out.push(li);
    }
    if (!out.length) {
      out.push(el('div', { class: 'ultron-muted' }, 'No flows yet: define one with %%ultron node.'));
    }
    this.flowsBox.replaceChildren(...out);
  }

  private select(name: string): void {
    this.selected = this.selected === name ? null : name;
    this.dagKey = '';
    if (!this.selected) {
      this.detailBox.replaceChildren();
    } else {
      this.detailBox.replaceChildren(el('div', { class: 'ultron-muted' }, `loading ${name}…`));
    }
    void this.refresh();
  }

  private renderDetail(st: IExperimentStatus): void {
    const box: HTMLElement[] = [];
    const h = el('h3', { 'data-role': 'detail', 'data-experiment': st.name });
    h.append(document.createTextNode(`${st.name} `), this.badge(st.state));
    box.push(h);
    const asked = st.as_of ? ` · asked ${new Date(st.as_of * 1000).toLocaleTimeString()}` : '';
    box.push(el('div', { class: 'ultron-muted' }, `${st.flow} v${st.version} · label ${st.label} · on ${st.target}${asked}`));
    if (st.message) {
      box.push(el('div', { class: 'ultron-message', 'data-role': 'message' }, st.message));
    }
    const actions = el('div', { class: 'ultron-actions' });
    const running = ACTIVE.has(st.state);
    actions.append(
      this.button('Stop', 'stop', !running, () => this.stop(st.name)),
      this.button('Resume', 'resume', running, () => this.resume(st.name)),
      this.button('Clone', 'clone', false, () => this.clone(st.name))
    );
    box.push(actions);
    box.push(this.nodesTable(st));
    box.push(this.dagBox);
    box.push(this.qualityBox);
    box.push(this.jobsList(st));
    this.detailBox.replaceChildren(...box);
  }

  /** The experiment's data-quality rules (nothing when it has none): each rule's state in
   * its last window, the node to look at first, and the newest violations. */
  private renderQuality(q: IQualityReport): void {
    if (!q.rules.length) {
      this.qualityBox.replaceChildren();
      return;
    }
    const out: HTMLElement[] = [el('div', { class: 'ultron-subtitle' }, 'Data quality')];
    if (q.look_first.length) {
      out.push(el('div', { class: 'ultron-message', 'data-role': 'look-first' },
        `look first at: ${q.look_first.join(', ')} (failing, with no failing node upstream)`));
    }
    const table = el('table', { class: 'ultron-table', 'data-role': 'rules' });
    const head = el('tr');
    for (const c of ['node', 'rule', 'state', 'value', 'last window', 'failed']) {
      head.append(el('th', {}, c));
    }
    table.append(head);
    for (const r of q.rules) {
      const tr = el('tr', { 'data-node': r.node, 'data-rule': r.rule, 'data-state': r.state });
      const state = el('td', { class: 'ultron-cell-state' }, r.state);
      state.style.background = this.colour(r.state === 'FAILING' ? 'failed' : r.state === 'ok' ? 'finished' : 'waiting');
      tr.append(el('td', {}, r.node), el('td', { title: `${r.text} (${r.bound})` }, r.rule), state,
        el('td', {}, r.value === null || r.value === undefined ? '' : String(r.value)),
        el('td', {}, r.window), el('td', {}, `${r.failed}/${r.windows}`));
      table.append(tr);
    }
    out.push(table);
    const recent = q.violations.slice(-5);
    if (recent.length) {
      const list = el('div', { 'data-role': 'violations' });
      for (const v of recent) {
        list.append(el('div', { class: 'ultron-muted', 'data-rule': v.rule },
          `${v.node} ${v.rule} ${v.window}: ${String(v.value)} (${v.bound})${v.sample ? ' · ' + v.sample : ''}`));
      }
      out.push(list);
    }
    this.qualityBox.replaceChildren(...out);
  }

  private nodesTable(st: IExperimentStatus): HTMLElement {
    const table = el('table', { class: 'ultron-table', 'data-role': 'nodes' });
    const head = el('tr');
    for (const c of ['node', 'kind', 'state', 'watermark', '']) {
      head.append(el('th', {}, c));
    }
    table.append(head);
    for (const n of st.nodes) {
      const tr = el('tr', { 'data-node': n.node, 'data-state': n.state });
      const state = el('td', { class: 'ultron-cell-state' }, n.state);
      state.style.background = this.colour(n.state);
      const extra = el('td');
      if (n.kind.startsWith('flink') && !n.shared_from) {
        extra.append(this.button('Restart', 'restart', false, () => this.restart(st.name, n.node)));
      }
      tr.append(el('td', { title: nodeTitle(n) }, n.node), el('td', {}, n.kind), state,
        el('td', { class: 'ultron-wm' }, n.watermark ?? ''), extra);
      table.append(tr);
      if (n.error) {
        const err = el('tr', { class: 'ultron-node-error' });
        err.append(el('td', { colspan: '5' }, n.error));
        table.append(err);
      }
    }
    return table;
  }

  private jobsList(st: IExperimentStatus): HTMLElement {
    const box = el('div', { class: 'ultron-jobs', 'data-role': 'jobs' });
    box.append(el('div', { class: 'ultron-subtitle' }, 'Flink jobs'));
    for (const j of st.jobs) {
      const row = el('div', { 'data-job': j.job_id, 'data-node': j.node });
      const a = el('a', { href: safeHref(j.web_url), target: '_blank', rel: 'noopener', title: j.job_id },
        j.job_id.slice(0, 12) + '…');
      row.append(el('span', {}, `${j.node}: `), a, el('span', { class: 'ultron-muted' },
        ` ${j.state}` + (j.shared_from ? ` · shared from ${j.shared_from}` : '')));
      box.append(row);
    }
    if (!st.jobs.length) {
      box.append(el('div', { class: 'ultron-muted' }, 'no Flink jobs'));
    }
    if (st.flink_web) {
      box.append(el('a', { href: safeHref(st.flink_web), target: '_blank', rel: 'noopener' }, 'Flink web UI'));
    }
    return box;
  }

  private renderEvents(events: IEvent[]): void {
    const table = el('table', { class: 'ultron-table', 'data-role': 'events' });
    for (const e of [...events].reverse()) {
      const tr = el('tr', { 'data-key': e.key });
      const value = JSON.stringify(e.value);
      tr.append(
        el('td', { class: 'ultron-muted' }, new Date(e.created * 1000).toLocaleTimeString()),
        el('td', {}, e.key),
        el('td', { title: value }, value.length > 60 ? value.slice(0, 57) + '…' : value)
      );
      table.append(tr);
    }
    this.eventsBox.replaceChildren(events.length ? table : el('div', { class: 'ultron-muted' }, 'no events'));
  }

  private renderModels(models: IModel[]): void {
    const out: HTMLElement[] = [];
    for (const m of models) {
      const box = el('div', { class: 'ultron-model', 'data-model': m.name });
      box.append(el('b', {}, m.name));
      for (const v of m.versions) {
        const row = el('div', { 'data-version': String(v.version) });
        const from = v.experiment ? `${v.experiment}${v.node ? '/' + v.node : ''}` : '';
        row.append(
          el('span', {}, ` v${v.version} `),
          el('span', { 'data-role': 'aliases' }, v.aliases.map(a => '@' + a).join(' ')),
          el('span', { class: 'ultron-muted', title: new Date(v.created).toLocaleString() },
            from ? ` ${from} ` : ' '),
          this.button('Promote', 'promote', false, () => this.promote(m.name, v.version)));
        box.append(row);
      }
      out.push(box);
    }
    this.modelsBox.replaceChildren(...(out.length ? out : [el('div', { class: 'ultron-muted' }, 'no models')]));
  }

  private button(label: string, action: string, disabled: boolean, run: () => Promise<void>): HTMLElement {
    const b = el('button', { class: 'jp-mod-styled ultron-button', 'data-action': action }, label);
    b.disabled = disabled || this.busy;
    b.onclick = ev => {
      ev.stopPropagation();
      void run();
    };
    return b;
  }

  // ------------------------------------------------------------------ actions
  private async act(what: string, call: () => Promise<unknown>): Promise<void> {
    this.busy = true;
    this.showError('');
    this.noticeLine.textContent = `${what}…`;
    try {
      await call();
      this.noticeLine.textContent = `${what}: done`;
    } catch (reason) {
      this.noticeLine.textContent = '';
      this.showError(reason instanceof Error ? reason.message : String(reason));
    } finally {
      this.busy = false;
      this.dagKey = '';
      void this.refresh();
    }
  }

  private async stop(name: string): Promise<void> {
    const choice = await confirmStop(name);
    if (choice) {
      await this.act(`stopping ${name}`, () => api.stop(name, choice.savepoint));
    }
  }

  private async resume(name: string): Promise<void> {
    if (await confirmResume(name)) {
      await this.act(`resuming ${name}`, () => api.resume(name));
    }
  }

  private async restart(name: string, node: string): Promise<void> {
    const choice = await confirmRestart(name, node);
    if (choice) {
      await this.act(`restarting ${node} of ${name}`, () => api.restart(name, node, choice.fromSavepoint));
    }
  }

  private async clone(source: string): Promise<void> {
    let savepoints: ISavepoint[] = [];
    try {
      savepoints = await api.savepoints(source);
    } catch (reason) {
      // A clone without branching is still possible: say why none are listed.
      this.showError(reason instanceof Error ? reason.message : String(reason));
    }
    const ask = await askClone(source, savepoints);
    if (!ask) {
      return;
    }
    let planned;
    try {
      planned = await api.clone(source, ask.name, ask.overrides, true, ask.label, ask.fromSavepoints);
    } catch (reason) {
      this.showError(reason instanceof Error ? reason.message : String(reason));
      return;
    }
    if (await confirmPlan(planned.plan)) {
      await this.act(`cloning ${source} → ${ask.name}`, async () => {
        await api.clone(source, ask.name, ask.overrides, false, ask.label, ask.fromSavepoints);
        this.selected = ask.name;
      });
    }
  }

  private async promote(model: string, version: number): Promise<void> {
    const alias = await askPromote(model, version);
    if (alias) {
      await this.act(`promoting ${model} v${version} to @${alias}`, async () => {
        await api.promote(model, version, alias);
        await this.loadModels();
      });
    }
  }

  private showError(message: string): void {
    this.errorLine.textContent = message;
    this.errorLine.hidden = !message;
  }

  private readonly poll: Poll;
  private info: IInfo | null = null;
  private selected: string | null = null;
  private busy = false;
  private ticks = 0;
  private dagKey = '';
  private dagUrl: string | null = null;
  private readonly statusLine = el('span', { class: 'ultron-status', 'data-role': 'status' }, 'connecting…');
  private readonly errorLine = el('div', { class: 'ultron-error', 'data-role': 'error', hidden: '' });
  private readonly noticeLine = el('div', { class: 'ultron-notice', 'data-role': 'notice' });
  private readonly flowsBox = el('div', { 'data-role': 'flows' });
  private readonly detailBox = el('div', { class: 'ultron-detail' });
  private readonly dagBox = el('div', { class: 'ultron-dag-box' });
  private readonly eventsBox = el('div');
  private readonly modelsBox = el('div', { 'data-role': 'models' });
  private readonly qualityBox = el('div', { class: 'ultron-quality', 'data-role': 'quality' });
}

function section(title: string, body: HTMLElement): HTMLElement {
  const box = el('div', { class: 'ultron-section' });
  box.append(el('div', { class: 'ultron-subtitle' }, title), body);
  return box;
}

/** Only web links open from the panel (never `javascript:` or `data:`). */
function safeHref(url: string | null): string {
  return url && /^https?:\/\//i.test(url) ? url : '#';
}

function nodeTitle(n: INodeStatus): string {
  const parts = [n.instance ?? ''];
  if (n.shared_from) {
    parts.push(`shared from ${n.shared_from}`);
  }
  if (n.savepoint) {
    parts.push(`savepoint ${n.savepoint}`);
  }
  return parts.filter(Boolean).join(' · ');
}
