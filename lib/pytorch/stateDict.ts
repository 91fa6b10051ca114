/**
 * Which dict of an unpickled checkpoint holds the weights. `torch.save(model.state_dict())` (and every
 * shard transformers writes) puts the tensors at the top level; training scripts nest them beside the
 * optimizer and the epoch: `{'epoch', 'state_dict': {'module.…': …}, 'optimizer': …}` (open_clip, timm),
 * `{'model': …}`, `{'model_state_dict': …}`, Lightning's `{'state_dict': {'model.…': …}}`.
 *
 * The rule: the top level if it holds a tensor; otherwise the first of STATE_DICT_KEYS whose value is
 * a dict holding tensors. EMA weights (`state_dict_ema`, `model_ema`) are read only when asked for by
 * name (`stateDictKey`), which then applies to every PyTorch input. A `module.` prefix on every tensor
 * name (DistributedDataParallel) is stripped.
 */
import { ModelStockError } from '../errors';
import { CHECK_EVERY, type Sliced } from '../util/sliced';
import {
  PyDict,
  PyGlobal,
  PyObject,
  isTensorLike,
  type PyTensor,
  type PyUnreadableTensor,
  type PyValue,
} from './values';

export const STATE_DICT_KEYS: readonly string[] = ['state_dict', 'model_state_dict', 'model', 'module'];

const DDP_PREFIX = 'module.';

export interface FoundStateDict {
  /** The top-level key it was found under; undefined: the top level itself. */
  readonly key: string | undefined;
  /** The tensors, named (prefix stripped), in the dict's insertion order. */
  readonly tensors: readonly (readonly [string, PyTensor | PyUnreadableTensor])[];
  /** Entries not read: non-tensor values beside the tensors and, when nested, the other top-level entries. */
  readonly ignored: number;
  /** Names of the first few of them. */
  readonly ignoredNames: readonly string[];
  /** Whether every tensor name started with `module.`, now stripped. */
  readonly strippedPrefix: boolean;
  /** Other top-level entries that are dicts of tensors too (`state_dict_ema`): what stateDictKey could choose. */
  readonly alternatives: readonly string[];
}

const NAMES_KEPT = 6;

/** Whether `v` is a dict with at least one tensor among its values (checked in slices). */
function* holdsTensor(v: PyValue | undefined): Sliced<boolean> {
  if (!(v instanceof PyDict)) return false;
  for (let i = 0; i < v.values.length; i++) {
    if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
    if (isTensorLike(v.values[i])) return true;
  }
  return false;
}

function describe(v: PyValue): string {
  if (v instanceof PyObject && v.callee instanceof PyGlobal) return `a pickled ${v.callee.qualified} object`;
  if (v instanceof PyObject) return 'a pickled object';
  if (v === null) return 'None';
  return `a ${typeof v === 'object' ? v.constructor.name.replace(/^Py/, '').toLowerCase() : typeof v}`;
}

export function* findStateDict(
  root: PyValue,
  file: string,
  stateDictKey: string | undefined,
): Sliced<FoundStateDict> {
  const noStateDict = (message: string): ModelStockError =>
    new ModelStockError('INVALID_PICKLE', `no state dict: ${message}`, { file });
  if (!(root instanceof PyDict)) {
    throw noStateDict(
      `the file holds ${describe(root)}, not a dict of tensors` +
        (root instanceof PyObject ? ' (a whole pickled model?): save model.state_dict() instead' : ''),
    );
  }
  const stringKeys = (d: PyDict): string[] => d.keys.filter((k): k is string => typeof k === 'string');

  let key: string | undefined;
  let chosen: PyDict | undefined;
  if (stateDictKey !== undefined) {
    const v = root.get(stateDictKey);
    if (!(yield* holdsTensor(v))) {
      const keys = stringKeys(root);
      throw new ModelStockError(
        'BAD_CONFIG',
        v === undefined
          ? `has no entry "${stateDictKey}" (--state-dict-key applies to every PyTorch input); its entries: ${list(keys)}`
          : `entry "${stateDictKey}" holds no tensors (it is ${describe(v)})`,
        { file },
      );
    }
    key = stateDictKey;
    chosen = v as PyDict;
  } else if (yield* holdsTensor(root)) {
    chosen = root;
  } else {
    for (const k of STATE_DICT_KEYS) {
      if (yield* holdsTensor(root.get(k))) {
        key = k;
        chosen = root.get(k) as PyDict;
        break;
      }
    }
  }
  if (chosen === undefined) {
    const withTensors: string[] = [];
    for (const k of stringKeys(root)) if (yield* holdsTensor(root.get(k))) withTensors.push(k);
    throw noStateDict(
      `the top level holds no tensor and none of ${STATE_DICT_KEYS.join(', ')} is a dict of tensors ` +
        `(entries: ${list(stringKeys(root))})` +
        (withTensors.length > 0
          ? `; dicts of tensors under ${list(withTensors)}: choose one with --state-dict-key (API: stateDictKey)`
          : ''),
    );
  }

  const tensors: [string, PyTensor | PyUnreadableTensor][] = [];
  const ignoredNames: string[] = [];
  let ignored = 0;
  const ignore = (name: string): void => {
    ignored++;
    if (ignoredNames.length < NAMES_KEPT) ignoredNames.push(name);
  };
  if (key !== undefined)
    for (const k of root.keys) if (k !== key) ignore(typeof k === 'string' ? k : String(k));
  let prefixed = true;
  for (let i = 0; i < chosen.keys.length; i++) {
    if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
    const k = chosen.keys[i] as PyValue;
    const v = chosen.values[i] as PyValue;
    const name = typeof k === 'string' ? k : undefined;
    if (name === undefined || !isTensorLike(v)) {
      ignore(key === undefined ? (name ?? String(k)) : `${key}.${name ?? String(k)}`);
      continue;
    }
    if (!name.startsWith(DDP_PREFIX)) prefixed = false;
    tensors.push([name, v]);
  }
  const alternatives: string[] = [];
  if (key !== undefined && stateDictKey === undefined) {
    for (const k of stringKeys(root))
      if (k !== key && (yield* holdsTensor(root.get(k)))) alternatives.push(k);
  }
  const strippedPrefix = prefixed && tensors.length > 0;
  if (strippedPrefix) {
    for (let i = 0; i < tensors.length; i++) {
      if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
      const [name, t] = tensors[i] as [string, PyTensor | PyUnreadableTensor];
      tensors[i] = [name.slice(DDP_PREFIX.length), t];
    }
  }
  return { key, tensors, ignored, ignoredNames, strippedPrefix, alternatives };
}

function list(names: readonly string[]): string {
  const shown = names.slice(0, NAMES_KEPT).map((n) => JSON.stringify(n));
  return names.length === 0 ? '(none)' : shown.join(', ') + (names.length > NAMES_KEPT ? ', …' : '');
}
