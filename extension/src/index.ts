/**
 * JupyterLab plugin: ultron's side panel in the left sidebar, and a command to show it.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { LabIcon } from '@jupyterlab/ui-components';

import { UltronPanel } from './panel';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 16 16">
<g class="jp-icon3" fill="#616161"><circle cx="3" cy="8" r="2"/><circle cx="13" cy="3.5" r="2"/>
<circle cx="13" cy="12.5" r="2"/><path d="M4.6 7.2 11.3 4.2l.4.9-6.7 3zm0 1.6.4-.9 6.7 3-.4.9z"/></g></svg>`;

export const ultronIcon = new LabIcon({ name: 'ultron_nb:icon', svgstr: ICON_SVG });

const COMMAND = 'ultron:open-panel';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'ultron_nb:panel',
  description: 'ultron side panel: flows, experiments, nodes, Flink jobs, events, models',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null
  ) => {
    const panel = new UltronPanel();
    panel.title.icon = ultronIcon;
    app.shell.add(panel, 'left', { rank: 700 });
    restorer?.add(panel, 'ultron-panel');
    app.commands.addCommand(COMMAND, {
      label: 'Show the ultron panel',
      execute: () => {
        app.shell.activateById(panel.id);
        void panel.refresh();
      }
    });
    palette?.addItem({ command: COMMAND, category: 'ultron' });
  }
};

export default plugin;
