/**
 * PEFT LoRA adapters behind the checkpoint seam: a folder with `adapter_config.json` is an adapter
 * (whatever else it holds), read from `adapter_model.safetensors`, else `adapter_model.bin` through the
 * PyTorch reader — safetensors wins when both exist, as PEFT's load_peft_weights does
 * (P:src/peft/utils/save_and_load.py#L1018-L1023). Naming `adapter_config.json` or one of the two weight
 * files directly reads the same adapter.
 */
import { readFile, stat } from 'node:fs/promises';
import * as path from 'node:path';
import { ModelStockError } from '../errors';
import type { CheckpointFormat, FormatRead } from '../checkpoint/types';
import { pytorchFormat } from '../pytorch/format';
import { safetensorsFormat } from '../safetensors/format';
import { parseAdapterConfig } from './config';
import { sortAdapterTensors } from './keys';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_SAFETENSORS = 'adapter_model.safetensors';
export const ADAPTER_BIN = 'adapter_model.bin';

/** adapter_config.json is at most a few KB; anything this large is not one. */
const MAX_CONFIG_BYTES = 16 << 20;

function weightsOf(names: ReadonlySet<string>): string | undefined {
  if (names.has(ADAPTER_SAFETENSORS)) return ADAPTER_SAFETENSORS;
  return names.has(ADAPTER_BIN) ? ADAPTER_BIN : undefined;
}

const NO_WEIGHTS = `${ADAPTER_CONFIG} but neither ${ADAPTER_SAFETENSORS} nor ${ADAPTER_BIN} beside it`;

async function filesIn(dir: string, names: readonly string[]): Promise<Set<string>> {
  const found = new Set<string>();
  for (const n of names) {
    const st = await stat(path.join(dir, n)).catch(() => undefined);
    if (st?.isFile() === true) found.add(n);
  }
  return found;
}

export const loraFormat: CheckpointFormat = {
  name: 'lora',
  singleFile: ADAPTER_CONFIG,
  companions(names) {
    const weights = weightsOf(names);
    return weights === undefined ? NO_WEIGHTS : [weights];
  },
  claims: (file) => [ADAPTER_CONFIG, ADAPTER_SAFETENSORS, ADAPTER_BIN].includes(path.basename(file)),
  sniff: () => false,
  async read(target, files, options): Promise<FormatRead> {
    const named = files[0] as string;
    const dir = path.dirname(named);
    const configFile = path.join(dir, ADAPTER_CONFIG);
    const present = await filesIn(dir, [ADAPTER_CONFIG, ADAPTER_SAFETENSORS, ADAPTER_BIN]);
    if (!present.has(ADAPTER_CONFIG)) {
      throw new ModelStockError(
        'UNSUPPORTED_ADAPTER',
        `LoRA adapter weights without their ${ADAPTER_CONFIG} beside them: r, lora_alpha and the rest of the ` +
          'adapter are unknown; put the config next to it (or name a merged model instead)',
        { file: named },
      );
    }
    const weightsName = path.basename(named) === ADAPTER_CONFIG ? weightsOf(present) : path.basename(named);
    if (weightsName === undefined) throw new ModelStockError('NO_CHECKPOINT', NO_WEIGHTS, { file: dir });
    const weightsFile = path.join(dir, weightsName);
    let text: string;
    try {
      const bytes = await readFile(configFile);
      if (bytes.byteLength > MAX_CONFIG_BYTES) {
        throw new ModelStockError('UNSUPPORTED_ADAPTER', `${bytes.byteLength} bytes: not an adapter config`, {
          file: configFile,
        });
      }
      text = bytes.toString('utf8');
    } catch (e) {
      if (e instanceof ModelStockError) throw e;
      throw new ModelStockError('IO_ERROR', `cannot read: ${(e as Error).message}`, {
        file: configFile,
        cause: e,
      });
    }
    const config = parseAdapterConfig(text, configFile);
    // An adapter's .bin is a plain state dict (PEFT's torch_load): a --state-dict-key meant for
    // PyTorch fine-tunes does not apply to it.
    const weights = weightsName.endsWith('.bin')
      ? await pytorchFormat.read(target, [weightsFile], { ...options, stateDictKey: undefined })
      : await safetensorsFormat.read(target, [weightsFile], options);
    const sorted = sortAdapterTensors(
      weights.files.flatMap((f) => f.tensors),
      config,
      configFile,
    );
    return {
      files: weights.files,
      warnings: [...weights.warnings, ...config.warnings, ...sorted.warnings],
      adapter: { configFile, config, modules: sorted.modules, weights: sorted.weights },
    };
  },
};
