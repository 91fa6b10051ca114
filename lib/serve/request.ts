/**
 * What POST /api/jobs accepts, and what a job becomes for the library. `options` takes only the keys
 * in JOB_OPTIONS (one line each: adding an option the library grows is one entry); anything else —
 * `report`, `overwrite`, `memory` — is a 400. A mergekit YAML (`config`) goes through the library's
 * parser. Every model reference is resolved against the roots (roots.ts), at submit and again when the
 * job starts.
 */
import { parseDtypeName, parseMergekitYaml, resolvedConfigYaml } from '../config/mergekit';
import { ModelStockError } from '../errors';
import type { LayerRangeCheck } from '../config/layers';
import { parseSize } from '../cli/size';
import type { InspectOptions, MergeOptions } from '../types';
import { HttpError } from './errors';
import type { ResolvedModel, Roots } from './roots';

export type JobKind = 'merge' | 'inspect';
export const JOB_KINDS: readonly JobKind[] = ['merge', 'inspect'];

const BOTH: readonly JobKind[] = JOB_KINDS;
const REF = { type: 'string', minLength: 1, maxLength: 4096 } as const;

interface OptionField {
  /** JSON schema of the value. */
  readonly schema: Readonly<Record<string, unknown>>;
  /** The job kinds that take it. */
  readonly kinds: readonly JobKind[];
  /** The library's value for the JSON one (default: as is); throws HttpError or ModelStockError. */
  readonly convert?: (value: never) => unknown;
}

/** Every key `options` may hold. base, models and out are resolved against the roots (prepareJob). */
export const JOB_OPTIONS = {
  base: { schema: REF, kinds: BOTH },
  models: { schema: { type: 'array', maxItems: 64, items: REF }, kinds: BOTH },
  out: { schema: { type: 'string', minLength: 1, maxLength: 255 }, kinds: ['merge'] },
  filterWise: { schema: { type: 'boolean' }, kinds: BOTH },
  theta: { schema: { enum: ['mean-cos', 'mean-angle'] }, kinds: BOTH },
  outDtype: {
    schema: { type: 'string', maxLength: 32 },
    kinds: BOTH,
    convert: (v: string) => parseDtypeName(v, 'outDtype'),
  },
  shardSize: {
    schema: {
      anyOf: [
        { type: 'integer', minimum: 1 },
        { type: 'string', maxLength: 32 },
      ],
    },
    kinds: ['merge'],
    convert: (v: number | string) => (typeof v === 'number' ? v : sizeOption(v)),
  },
  backend: { schema: { enum: ['auto', 'js', 'native', 'cuda'] }, kinds: BOTH },
  stateDictKey: { schema: { type: 'string', minLength: 1, maxLength: 256 }, kinds: BOTH },
  outFormat: { schema: { enum: ['model', 'peft'] }, kinds: ['merge'] },
} as const satisfies Record<string, OptionField>;

export type OptionName = keyof typeof JOB_OPTIONS;

function sizeOption(v: string): number {
  try {
    return parseSize(v);
  } catch (e) {
    throw new HttpError(400, 'BAD_REQUEST', `options.shardSize: ${(e as Error).message}`);
  }
}

/** POST /api/jobs's body, as the schema below lets it through. */
export interface JobRequest {
  readonly kind: JobKind;
  readonly config?: string;
  readonly out?: string;
  readonly options?: Readonly<Partial<Record<OptionName, unknown>>>;
}

export const JOB_REQUEST_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['kind'],
  properties: {
    kind: { enum: JOB_KINDS },
    config: { type: 'string', minLength: 1 },
    out: JOB_OPTIONS.out.schema,
    options: {
      type: 'object',
      additionalProperties: false,
      properties: Object.fromEntries(Object.entries(JOB_OPTIONS).map(([k, f]) => [k, f.schema])),
    },
  },
} as const;

const bad = (message: string): HttpError => new HttpError(400, 'BAD_REQUEST', message);

/** What a job runs: the library's options with references resolved, and what to say first. */
export interface PreparedJob {
  readonly kind: JobKind;
  /** For inspect, MergeOptions' input part; for merge, `out` is the absolute target. */
  readonly options: InspectOptions &
    Partial<Pick<MergeOptions, 'out' | 'shardSize' | 'tokenizerSource'>> & {
      readonly chatTemplate?: string;
      readonly configYaml?: string;
    };
  /** The config's own warnings (keys without effect, models left out). */
  readonly warnings: readonly string[];
}

/**
 * The job `request` asks for, checked against the roots now: 403 for a reference outside them, 409 for
 * an existing `out`, 400 for anything else the API or the library's options refuse.
 */
export async function prepareJob(request: JobRequest, roots: Roots): Promise<PreparedJob> {
  const { kind } = request;
  if ((request.config === undefined) === (request.options === undefined))
    throw bad('give either "config" (a mergekit YAML) or "options", not both');
  if (request.options !== undefined && request.out !== undefined)
    throw bad('"out" goes inside "options" (beside "config" only with a config)');

  const resolved = new Map<string, Promise<ResolvedModel>>();
  const resolve = async (ref: string, where: string): Promise<string> => {
    let r = resolved.get(ref);
    if (r === undefined) resolved.set(ref, (r = roots.resolveModel(ref, where)));
    const m = await r;
    return m.kind === 'path' ? m.path : m.ref;
  };

  let base: string;
  let models: readonly string[];
  let out: string | undefined;
  let library: Record<string, unknown> = {};
  let warnings: readonly string[] = [];
  let yaml: ReturnType<typeof parseMergekitYaml> | undefined;
  if (request.config !== undefined) {
    yaml = parseMergekitYaml(request.config, 'config');
    ({ base, models, warnings } = yaml);
    out = request.out;
    library = {
      filterWise: yaml.filterWise,
      ...(yaml.outDtype !== undefined ? { outDtype: yaml.outDtype } : {}),
      ...(yaml.chatTemplate !== undefined ? { chatTemplate: yaml.chatTemplate } : {}),
      ...(yaml.stateDictKey !== undefined ? { stateDictKey: yaml.stateDictKey } : {}),
      ...(yaml.outFormat !== undefined ? { outFormat: yaml.outFormat } : {}),
    };
  } else {
    const o = request.options ?? {};
    for (const key of Object.keys(o) as OptionName[]) {
      const field: OptionField = JOB_OPTIONS[key];
      if (!field.kinds.includes(kind)) throw bad(`options.${key} is not an option of ${kind}`);
      if (key === 'base' || key === 'models' || key === 'out') continue;
      const value = o[key];
      library[key] = field.convert === undefined ? value : field.convert(value as never);
    }
    if (typeof o.base !== 'string') throw bad('options.base is required');
    base = o.base;
    models = (o.models as string[] | undefined) ?? [];
    out = o.out as string | undefined;
  }
  if (models.length < 2) {
    throw new ModelStockError(
      'TOO_FEW_MODELS',
      `Model Stock needs at least 2 fine-tuned models, got ${models.length}`,
    );
  }
  if (kind === 'merge' && out === undefined) throw bad('a merge needs "out": a folder name inside --out');
  if (kind === 'inspect' && out !== undefined) throw bad('an inspection writes no "out"');

  const resolvedBase = await resolve(base, request.config !== undefined ? 'config base_model' : 'base');
  const resolvedModels: string[] = [];
  for (const [i, m] of models.entries()) resolvedModels.push(await resolve(m, `models[${i}]`));
  if (yaml !== undefined) {
    const source = yaml.tokenizerSource;
    if (source !== 'base') library.tokenizerSource = await resolve(source, 'config tokenizer_source');
    const ranges: LayerRangeCheck[] = [];
    for (const r of yaml.layerRanges)
      ranges.push({ ...r, reference: await resolve(r.reference, `config ${r.where}`) });
    if (ranges.length > 0) library.layerRanges = ranges;
  }
  const target = out === undefined ? undefined : await roots.outTarget(out);
  const theta = (library.theta as 'mean-cos' | 'mean-angle' | undefined) ?? 'mean-cos';
  return {
    kind,
    warnings,
    options: {
      ...library,
      base: resolvedBase,
      models: resolvedModels,
      ...(target !== undefined
        ? {
            out: target,
            // The output's model_stock_config.yml names the models as the request did.
            configYaml: resolvedConfigYaml({
              base,
              models,
              filterWise: (library.filterWise as boolean | undefined) ?? false,
              theta,
              outDtype: library.outDtype as MergeOptions['outDtype'],
              tokenizerSource: yaml?.tokenizerSource,
              chatTemplate: yaml?.chatTemplate,
              stateDictKey: library.stateDictKey as string | undefined,
              outFormat: library.outFormat as MergeOptions['outFormat'],
            }),
          }
        : {}),
    },
  };
}
