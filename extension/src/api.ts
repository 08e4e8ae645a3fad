/**
 * Calls to ultron's server extension (routes under `<base_url>ultron/api/`).
 *
 * Every call goes through `ServerConnection.makeRequest`, which sends the server's token and
 * the XSRF header. A failed call rejects with an `ApiError` whose message is the server's one
 * line (`{"error": "..."}`), or says that the Jupyter server cannot be reached.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
  /** True when the Jupyter server itself did not answer (restarting, gone). */
  get unreachable(): boolean {
    return this.status === 0;
  }
}

export interface IInfo {
  version: string;
  home: string;
  store: string;
  flink: string;
  state_colors: Record<string, string>;
}

export interface IFlowSummary {
  name: string;
  version: number;
  nodes: number;
  change: string;
  updated: number;
}

export interface IExperimentRow {
  name: string;
  flow: string;
  version: number;
  state: string;
  label: string;
  target: string;
  parent: string | null;
  created: number;
  updated: number;
}

export interface INodeStatus {
  node: string;
  kind: string;
  state: string;
  instance: string | null;
  job_id: string | null;
  web_url: string | null;
  watermark_ms: number | null;
  watermark: string | null;
  error: string | null;
  shared_from: string | null;
  savepoint: string | null;
  attempt: number | null;
}

export interface IJob {
  node: string;
  job_id: string;
  state: string;
  web_url: string | null;
  shared_from: string | null;
}

export interface IExperimentStatus {
  name: string;
  flow: string;
  version: number;
  label: string;
  target: string;
  state: string;
  message: string;
  params: Record<string, unknown>;
  nodes: INodeStatus[];
  jobs: IJob[];
  flink_web: string | null;
  /** When the server asked Flink for this status (epoch seconds). */
  as_of?: number;
}

export interface IEvent {
  id: number;
  key: string;
  value: unknown;
  version: number;
  namespace: string;
  sender: string;
  created: number;
}

export interface IPlanNode {
  node: string;
  plan: string;
  instance: string;
  why: string;
  params: string;
}

export interface IClonePlan {
  source: string;
  name: string;
  overrides: Record<string, string>;
  nodes: IPlanNode[];
  launches: string[];
  /** Node → the savepoint id it is branched from. */
  restores: Record<string, number>;
}

export interface IQualityRule {
  node: string;
  rule: string;
  text: string;
  bound: string;
  /** The last window (or run) measured, '' before the first. */
  window: string;
  value: unknown;
  /** 'ok', 'FAILING' or 'not yet'. */
  state: string;
  windows: number;
  failed: number;
}

export interface IQualityViolation {
  node: string;
  rule: string;
  window: string;
  value: unknown;
  bound: string;
  sample: string;
}

export interface IQualityReport {
  experiment: string;
  rules: IQualityRule[];
  /** Newest last. */
  violations: IQualityViolation[];
  failing: Record<string, string[]>;
  /** Failing nodes with no failing node upstream: where to look first. */
  look_first: string[];
}

/** A savepoint a clone can branch from (the source's family). */
export interface ISavepoint {
  id: number;
  experiment: string;
  node: string;
  taken: string;
  taken_ms: number;
  flow_version: number;
  restored_from: number | null;
  /** false: deleted; null: not known (a remote file system). */
  exists: boolean | null;
  location: string;
}

export interface ICloneResult {
  dry_run: boolean;
  plan: IClonePlan;
  status?: IExperimentStatus;
}

export interface IModelVersion {
  version: number;
  aliases: string[];
  /** Where it comes from: the experiment and node that registered it (lineage tags). */
  experiment: string;
  node: string;
  flow: string;
  window: string;
  /** Registered at (ms since the epoch). */
  created: number;
}

export interface IModel {
  name: string;
  versions: IModelVersion[];
}

const settings = (): ServerConnection.ISettings => ServerConnection.makeSettings();

/** Send one request; resolve to the response (status < 400) or reject with an ApiError. */
async function send(path: string, init: RequestInit = {}): Promise<Response> {
  const s = settings();
  const url = URLExt.join(s.baseUrl, 'ultron', 'api', path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, s);
  } catch (reason) {
    throw new ApiError(`Jupyter server not reachable (${String(reason)})`, 0);
  }
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try {
      const body = await response.json();
      if (body && typeof body.error === 'string') {
        message = body.error;
      }
    } catch {
      // not JSON: keep the status line
    }
    throw new ApiError(message, response.status);
  }
  return response;
}

async function getJson<T>(path: string): Promise<T> {
  return (await (await send(path)).json()) as T;
}

async function postJson<T>(path: string, body: unknown): Promise<T> {
  const response = await send(path, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'Content-Type': 'application/json' }
  });
  return (await response.json()) as T;
}

const enc = encodeURIComponent;

export const api = {
  info: () => getJson<IInfo>('info'),
  flows: () => getJson<IFlowSummary[]>('flows'),
  experiments: () => getJson<IExperimentRow[]>('experiments'),
  experiment: (name: string) => getJson<IExperimentStatus>(`experiments/${enc(name)}`),
  events: (limit = 15) => getJson<IEvent[]>(`events?limit=${limit}`),
  models: () => getJson<IModel[]>('models'),
  dagSvg: async (flow: string, experiment: string): Promise<string> =>
    (await send(`flows/${enc(flow)}/dag.svg?experiment=${enc(experiment)}`)).text(),
  stop: (name: string, savepoint: boolean) =>
    postJson<IExperimentStatus>(`experiments/${enc(name)}/stop`, { savepoint }),
  resume: (name: string) => postJson<IExperimentStatus>(`experiments/${enc(name)}/resume`, {}),
  restart: (name: string, node: string, fromSavepoint: boolean) =>
    postJson<IExperimentStatus>(`experiments/${enc(name)}/nodes/${enc(node)}/restart`, {
      from_savepoint: fromSavepoint
    }),
  quality: (name: string) => getJson<IQualityReport>(`experiments/${enc(name)}/quality`),
  savepoints: (name: string) => getJson<ISavepoint[]>(`experiments/${enc(name)}/savepoints`),
  clone: (
    source: string,
    name: string,
    overrides: string[],
    dryRun: boolean,
    label?: string,
    fromSavepoints: number[] = []
  ) =>
    postJson<ICloneResult>(`experiments/${enc(source)}/clone`, {
      name,
      set: overrides,
      dry_run: dryRun,
      label: label || null,
      from_savepoints: fromSavepoints
    }),
  promote: (model: string, version: number, alias: string) =>
    postJson<unknown>(`models/${enc(model)}/promote`, { version, alias })
};
