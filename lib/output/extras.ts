import * as fs from 'node:fs';
import * as path from 'node:path';
import { FloatDType, TORCH_DTYPE } from '../dtype';
import type { InputFormat, MergeReport, TensorReport } from '../types';
import { CHECK_EVERY, runSliced, runSync, type Sliced } from '../util/sliced';
import { copyFileSynced, writeFileSynced } from './atomic';
import { onPath } from './fsops';

/** Files that hold weights (in any format) or that we write ourselves: never copied from the base. */
const SKIP = [
  /\.safetensors$/i,
  /^model\.safetensors\.index\.json$/i,
  /^pytorch_model.*\.bin(\.index\.json)?$/i,
  /\.(bin|pt|pth|ckpt|h5|msgpack|gguf|onnx)$/i,
  /^README\.md$/i,
  /^model_stock_(report\.json|report\.svg|config\.yml)$/,
  /^\./,
];

/**
 * Copies the base's non-weight files (config, tokenizer, generation config, …) into the output folder.
 * config.json's torch_dtype is updated when the merged dtype differs from the base's.
 */
export async function copyBaseFiles(
  baseDir: string,
  outDir: string,
  outDtype: FloatDType | undefined,
  fsync: boolean,
): Promise<string[]> {
  const copied: string[] = [];
  let entries: fs.Dirent[];
  try {
    entries = await fs.promises.readdir(baseDir, { withFileTypes: true });
  } catch {
    return copied;
  }
  for (const e of entries) {
    if (SKIP.some((re) => re.test(e.name))) continue;
    const from = path.join(baseDir, e.name);
    // Hugging Face cache snapshots hold symlinks into blobs/: a link to a file counts as that file.
    const isFile =
      e.isFile() || (e.isSymbolicLink() && (await fs.promises.stat(from).catch(() => undefined))?.isFile());
    if (!isFile) continue;
    const to = path.join(outDir, e.name);
    if (e.name === 'config.json' && outDtype !== undefined) {
      const text = await onPath(from, 'cannot read', () => fs.promises.readFile(from, 'utf8'));
      let config: unknown;
      try {
        config = JSON.parse(text);
      } catch {
        config = undefined;
      }
      if (config !== null && typeof config === 'object' && !Array.isArray(config)) {
        const updated = { ...(config as Record<string, unknown>), torch_dtype: TORCH_DTYPE[outDtype] };
        await writeFileSynced(to, JSON.stringify(updated, null, 2) + '\n', fsync);
        copied.push(e.name);
        continue;
      }
    }
    await copyFileSynced(from, to, fsync);
    copied.push(e.name);
  }
  return copied;
}

const fmt = (x: number | undefined): string => (x === undefined ? '–' : x.toFixed(4));

const FORMAT_NAMES: Record<InputFormat, string> = {
  safetensors: 'safetensors',
  pytorch: 'PyTorch checkpoint',
  lora: 'LoRA adapter',
};

/** ` (PyTorch checkpoint)`: how input `i` (0 the base) was stored, when the report says. */
function storedAs(report: MergeReport, i: number): string {
  const input = report.inputs?.[i];
  return input === undefined ? '' : ` (${FORMAT_NAMES[input.format]})`;
}

/**
 * A short model card: what was merged, how, and where the per-tensor numbers are; `picture` is the
 * file name of the report's SVG beside it, embedded when given.
 */
export function modelCard(report: MergeReport, configYaml: string, picture?: string): string {
  return runSync(modelCardSteps(report, configYaml, picture));
}

/** `modelCard` in slices of a few ms: it walks every tensor of the report. */
export function modelCardSliced(report: MergeReport, configYaml: string, picture?: string): Promise<string> {
  return runSliced(modelCardSteps(report, configYaml, picture));
}

/** How an adapter output is used: loaded over the base, or folded into it (PEFT). */
function adapterUse(base: string): string {
  return `
The merge is a PEFT LoRA adapter of the base (the adapters' factors concatenated, scaled by Model Stock's
ratio): W0 + B′·A′ is the merged weight. Load it over the base, or fold it in:

\`\`\`python
from transformers import AutoModelForCausalLM
from peft import PeftModel
base = AutoModelForCausalLM.from_pretrained(${JSON.stringify(base)})
model = PeftModel.from_pretrained(base, "path/to/this/folder")
merged = model.merge_and_unload()   # optional: a plain model
\`\`\`
`;
}

function* modelCardSteps(
  report: MergeReport,
  configYaml: string,
  picture: string | undefined,
): Sliced<string> {
  // A loop, not Math.min(...ts): spreading a million arguments overflows the stack.
  let merged = 0;
  let copied = 0;
  let count = 0;
  let sum = 0;
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < report.tensors.length; i++) {
    if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
    const tensor = report.tensors[i] as TensorReport;
    if (tensor.action === 'copy') copied++;
    if (tensor.action !== 'merge') continue;
    merged++;
    const t = tensor.t ?? tensor.tStats?.mean;
    if (t === undefined) continue;
    count++;
    sum += t;
    min = Math.min(min, t);
    max = Math.max(max, t);
  }
  const mean = count > 0 ? sum / count : undefined;
  const adapter = report.outFormat === 'peft';
  return `---
${adapter ? 'library_name: peft\n' : ''}tags:
- merge
- model-stock
${adapter ? '- lora\n' : ''}---
# Model Stock merge${adapter ? ' (LoRA adapter)' : ''}

This model was merged with [Model Stock](https://arxiv.org/abs/2403.19522) (Jang, Yun, Han, ECCV 2024)
by model-stock, ${report.filterWise ? 'filter-wise (one ratio per output row)' : 'layer-wise (one ratio per tensor)'},
combining the pairwise cosines by \`${report.theta}\`.

- base: \`${report.base}\`${storedAs(report, 0)}
- fine-tuned: ${report.models.map((m, i) => `\`${m}\`${storedAs(report, i + 1)}`).join(', ')}
- tensors: ${merged} merged, ${copied} copied from the base
- interpolation ratio t over merged tensors: min ${fmt(count > 0 ? min : undefined)}, mean ${fmt(mean)}, max ${fmt(count > 0 ? max : undefined)}
- backend: ${report.backend.name} (${report.backend.isa})

Per-tensor cosines and ratios are in \`model_stock_report.json\`.
${adapter ? adapterUse(report.base) : ''}${
    picture === undefined
      ? ''
      : `
![Interpolation ratio t per layer and tensor kind, and the angle between the fine-tunes' task vectors per layer](${picture})
`
  }
## Configuration

\`\`\`yaml
${configYaml.trimEnd()}
\`\`\`
`;
}
