/**
 * Confirmation dialogs of the panel's actions. Each resolves to the user's choice, or null
 * when the user cancels; nothing is sent to the server before the user confirms.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { IClonePlan, ISavepoint } from './api';

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    node.setAttribute(k, v);
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** A dialog body made of a DOM node, with a value read when the user confirms. */
class Body<T> extends Widget implements Dialog.IBodyWidget<T> {
  constructor(
    node: HTMLElement,
    private readonly read: () => T
  ) {
    super({ node });
    this.addClass('ultron-dialog');
  }
  getValue(): T {
    return this.read();
  }
}

function checkbox(label: string, checked: boolean, name: string): [HTMLElement, HTMLInputElement] {
  const row = el('label', { class: 'ultron-check' });
  const box = el('input', { type: 'checkbox', 'data-field': name });
  box.checked = checked;
  row.append(box, document.createTextNode(' ' + label));
  return [row, box];
}

export async function confirmStop(experiment: string): Promise<{ savepoint: boolean } | null> {
  const node = el('div');
  node.append(
    el('p', {}, `Stop experiment ${experiment}? Nodes it shares with running experiments keep running.`)
  );
  const [row, box] = checkbox('with a savepoint (resume continues where it stopped)', true, 'savepoint');
  node.append(row);
  const result = await showDialog({
    title: 'Stop experiment',
    body: new Body(node, () => ({ savepoint: box.checked })),
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Stop' })]
  });
  return result.button.accept ? result.value : null;
}

export async function confirmResume(experiment: string): Promise<boolean> {
  const result = await showDialog({
    title: 'Resume experiment',
    body: `Start the stopped jobs of ${experiment} again from their last savepoints?`,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Resume' })]
  });
  return result.button.accept;
}

export async function confirmRestart(
  experiment: string,
  node: string
): Promise<{ fromSavepoint: boolean } | null> {
  const body = el('div');
  body.append(
    el('p', {}, `Restart node ${node} of ${experiment}? Its running job is cancelled first.`)
  );
  const [row, box] = checkbox('from its last savepoint (otherwise afresh)', false, 'from_savepoint');
  body.append(row);
  const result = await showDialog({
    title: 'Restart node',
    body: new Body(body, () => ({ fromSavepoint: box.checked })),
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Restart' })]
  });
  return result.button.accept ? result.value : null;
}

export interface ICloneRequest {
  name: string;
  overrides: string[];
  label: string;
  /** Savepoint ids the clone's nodes branch from (`--from-savepoint`). */
  fromSavepoints: number[];
}

/** The savepoints a clone may branch from, one checkbox each (deleted ones disabled). */
function savepointChoices(savepoints: ISavepoint[]): [HTMLElement, () => number[]] {
  const box = el('div', { 'data-role': 'savepoints' });
  const boxes: [number, HTMLInputElement][] = [];
  for (const sp of savepoints) {
    const gone = sp.exists === false;
    const [row, check] = checkbox(
      `#${sp.id} ${sp.node} of ${sp.experiment}, ${sp.taken} (flow v${sp.flow_version})` +
        (gone ? ' — deleted' : ''),
      false,
      'savepoint'
    );
    check.dataset.savepoint = String(sp.id);
    check.disabled = gone;
    row.title = sp.location;
    boxes.push([sp.id, check]);
    box.append(row);
  }
  return [box, () => boxes.filter(([, c]) => c.checked).map(([id]) => id)];
}

/** Step 1 of a clone: its name, `--set` overrides (one NODE.PARAM=V per line) and the
 * savepoints its nodes branch from. */
export async function askClone(source: string, savepoints: ISavepoint[] = []): Promise<ICloneRequest | null> {
  const body = el('div');
  const name = el('input', { type: 'text', 'data-field': 'name', value: `${source}_clone` });
  const sets = el('textarea', {
    'data-field': 'set',
    rows: '4',
    placeholder: 'node.param=value (one per line)'
  });
  const label = el('input', { type: 'text', 'data-field': 'label', placeholder: 'default: the name' });
  const [choices, chosen] = savepointChoices(savepoints);
  body.append(
    el('p', {}, `Clone ${source}: unchanged nodes are shared, changed ones and their downstream launch.`),
    el('div', { class: 'ultron-field' }, 'name'),
    name,
    el('div', { class: 'ultron-field' }, 'overrides (--set)'),
    sets,
    el('div', { class: 'ultron-field' }, 'label'),
    label
  );
  if (savepoints.length) {
    body.append(
      el('div', { class: 'ultron-field' }, 'branch from savepoints (--from-savepoint; the node starts with that state)'),
      choices
    );
  }
  const result = await showDialog({
    title: 'Clone experiment',
    body: new Body(body, () => ({
      name: name.value.trim(),
      overrides: sets.value
        .split('\n')
        .map(s => s.trim())
        .filter(s => s.length > 0),
      label: label.value.trim(),
      fromSavepoints: chosen()
    })),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Show plan' })]
  });
  return result.button.accept ? result.value : null;
}

/** Step 2 of a clone: the plan, node by node; launching needs a second confirmation. */
export async function confirmPlan(plan: IClonePlan): Promise<boolean> {
  const body = el('div');
  const table = el('table', { class: 'ultron-table ultron-plan' });
  const head = el('tr');
  for (const h of ['node', 'plan', 'why', 'parameters']) {
    head.append(el('th', {}, h));
  }
  table.append(head);
  for (const n of plan.nodes) {
    const tr = el('tr', { 'data-node': n.node });
    tr.append(
      el('td', {}, n.node),
      el('td', { class: `ultron-plan-${n.plan}`, 'data-plan': n.plan }, n.plan),
      el('td', {}, n.why),
      el('td', {}, n.params)
    );
    table.append(tr);
  }
  const launches = plan.launches.length
    ? `Launches: ${plan.launches.join(', ')}.`
    : 'Launches nothing: every node is shared.';
  body.append(table, el('p', {}, launches));
  const result = await showDialog({
    title: `Clone ${plan.source} → ${plan.name}`,
    body: new Body(body, () => true),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Launch clone' })]
  });
  return result.button.accept;
}

export async function askPromote(model: string, version: number): Promise<string | null> {
  const body = el('div');
  const alias = el('input', { type: 'text', 'data-field': 'alias', value: 'champion' });
  body.append(el('p', {}, `Point an alias of ${model} at version ${version}:`), alias);
  const result = await showDialog({
    title: 'Promote model version',
    body: new Body(body, () => alias.value.trim()),
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Promote' })]
  });
  return result.button.accept && result.value ? result.value : null;
}

export { el };
