/**
 * The "New job" form: a merge or an inspection, of models picked from GET /api/models or of a pasted
 * mergekit YAML; POST /api/jobs; the refusal, if any, shown with its code.
 */
import { describe, type Api, type ListedModel } from './api.js';
import { byId, fill, formatBytes, h } from './dom.js';

export interface FormHooks {
  /** A job was accepted (201). */
  readonly onSubmitted: (job: { id: string; state: string }) => void;
}

type Kind = 'merge' | 'inspect';
type Source = 'pick' | 'yaml';

/** A fresh output name: the page suggests one, the user may change it. */
const suggestOut = (): string =>
  `merged-${new Date()
    .toISOString()
    .replace(/\.\d+Z$/, '')
    .replace(/[-:]/g, '')
    .replace('T', '-')}`;

export class JobForm {
  private readonly form = byId<HTMLFormElement>('job-form');
  private readonly base = byId<HTMLSelectElement>('base');
  private readonly fineTunes = byId('finetune-list');
  private readonly modelsNote = byId('models-note');
  private readonly out = byId<HTMLInputElement>('out');
  private readonly config = byId<HTMLTextAreaElement>('config');
  private readonly submit = byId<HTMLButtonElement>('submit');
  private readonly error = byId('form-error');
  private models: readonly ListedModel[] = [];

  constructor(
    private readonly api: Api,
    private readonly hooks: FormHooks,
  ) {
    this.out.value = suggestOut();
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.send();
    });
    this.form.addEventListener('change', (e) => {
      const name = (e.target as HTMLInputElement).name;
      if (name === 'kind' || name === 'source') this.sync();
      if ((e.target as HTMLElement).id === 'base') this.renderFineTunes();
    });
    this.sync();
  }

  private get kind(): Kind {
    return (this.form.elements.namedItem('kind') as RadioNodeList).value as Kind;
  }

  private get source(): Source {
    return (this.form.elements.namedItem('source') as RadioNodeList).value as Source;
  }

  /** Shows the fields the chosen kind and source use. */
  private sync(): void {
    const merge = this.kind === 'merge';
    byId('source-pick').hidden = this.source !== 'pick';
    byId('source-yaml').hidden = this.source !== 'yaml';
    byId('out-row').hidden = !merge;
    byId('shard-size-row').hidden = !merge;
    this.submit.textContent = merge ? 'Start merge' : 'Start inspection';
  }

  /** GET /api/models into the base list and the fine-tune checkboxes. */
  async loadModels(): Promise<void> {
    fill(this.modelsNote, 'Looking for model folders…');
    try {
      const r = await this.api.json<{ models: ListedModel[]; truncated: boolean }>('GET', '/api/models');
      this.models = r.models;
      const chosen = this.base.value;
      fill(
        this.base,
        ...r.models.map((m) =>
          h('option', { value: m.ref, selected: m.ref === chosen }, `${m.ref} (${describeModel(m)})`),
        ),
      );
      if (chosen === '' && r.models.length > 0) this.base.value = guessBase(r.models);
      this.renderFineTunes();
      fill(
        this.modelsNote,
        r.models.length === 0
          ? 'No checkpoint folders under the server’s --models roots (up to three levels down).'
          : r.truncated
            ? 'The roots hold more folders than the server lists: some models are missing here.'
            : '',
      );
    } catch (e) {
      const { code, message } = describe(e);
      fill(this.modelsNote, h('span', { class: 'error-text' }, h('code', {}, code), ` ${message}`));
    }
  }

  private renderFineTunes(): void {
    const checked = new Set(this.checkedFineTunes());
    const base = this.base.value;
    const others = this.models.filter((m) => m.ref !== base);
    fill(
      this.fineTunes,
      ...others.map((m, i) =>
        h(
          'label',
          { class: 'check' },
          h('input', {
            type: 'checkbox',
            name: 'model',
            value: m.ref,
            id: `ft-${i}`,
            checked: checked.has(m.ref),
          }),
          ` ${m.ref} `,
          h('span', { class: 'muted' }, `(${describeModel(m)})`),
        ),
      ),
    );
    if (others.length === 0) fill(this.fineTunes, h('p', { class: 'muted' }, 'No other model folder.'));
  }

  private checkedFineTunes(): string[] {
    return [...this.fineTunes.querySelectorAll<HTMLInputElement>('input[name=model]:checked')].map(
      (i) => i.value,
    );
  }

  /** The POST body for what the form says, or a message saying what is missing. */
  private body(): Record<string, unknown> | string {
    const kind = this.kind;
    const out = this.out.value.trim();
    if (kind === 'merge' && out === '') return 'Name the output folder.';
    if (this.source === 'yaml') {
      const config = this.config.value;
      if (config.trim() === '') return 'Paste a mergekit YAML (merge_method: model_stock).';
      return { kind, config, ...(kind === 'merge' ? { out } : {}) };
    }
    const models = this.checkedFineTunes();
    if (this.base.value === '') return 'Choose the base model.';
    if (models.length < 2) return 'Choose at least 2 fine-tuned models.';
    const value = (id: string): string => byId<HTMLInputElement | HTMLSelectElement>(id).value.trim();
    const options: Record<string, unknown> = { base: this.base.value, models };
    if (kind === 'merge') options.out = out;
    if (byId<HTMLInputElement>('filter-wise').checked) options.filterWise = true;
    if (value('theta') !== 'mean-cos') options.theta = value('theta');
    if (value('out-dtype') !== '') options.outDtype = value('out-dtype');
    if (value('backend') !== 'auto') options.backend = value('backend');
    if (kind === 'merge' && value('shard-size') !== '') options.shardSize = value('shard-size');
    return { kind, options };
  }

  private async send(): Promise<void> {
    fill(this.error);
    const body = this.body();
    if (typeof body === 'string') {
      fill(this.error, body);
      return;
    }
    this.submit.disabled = true;
    try {
      const job = await this.api.json<{ id: string; state: string }>('POST', '/api/jobs', body);
      if (this.kind === 'merge') this.out.value = suggestOut();
      this.hooks.onSubmitted(job);
    } catch (e) {
      const { code, message } = describe(e);
      fill(this.error, h('code', { class: 'code' }, code), ' ', message);
    } finally {
      this.submit.disabled = false;
    }
  }
}

function describeModel(m: ListedModel): string {
  return `${m.format}, ${formatBytes(m.bytes)}`;
}

/** The folder named like a base, else the first. */
function guessBase(models: readonly ListedModel[]): string {
  return (models.find((m) => /(^|\/)base([-_/]|$)/i.test(m.path)) ?? models[0]!).ref;
}
