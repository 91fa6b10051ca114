import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { autoMode, AUTO_CACHED_FRACTION, measureResidency } from '../engine/inputSources';
import { loadNativeAddon } from '../engine/native/loader';
import { backendEntries, createBackend } from '../engine/registry';
import { escapeControl } from '../errors';
import { formatBytes } from './size';
import { loadCudaAddon } from '../engine/cuda/addon';
import { hubSettings } from '../hub/settings';

/** `model-stock doctor [FOLDER]`: what this machine will merge with, and why. */
export async function doctor(folder?: string): Promise<void> {
  const lines: string[] = [];
  lines.push(`node ${process.version} on ${os.platform()} ${os.arch()}, ${os.cpus().length} cores`);
  for (const entry of backendEntries()) {
    const why = entry.unavailable();
    lines.push(`backend ${entry.name}: ${why.length === 0 ? 'available' : 'unavailable'}`);
    for (const reason of why) lines.push(`  - ${reason}`);
  }
  const backend = createBackend('auto');
  try {
    const info = backend.info();
    lines.push(`auto selects: ${info.name}`);
    lines.push(`device: ${info.device.kind} ${info.device.name}`);
    lines.push(`instruction set: ${info.isa}`);
    lines.push(`threads: ${info.threads}`);
  } finally {
    await backend.dispose();
  }
  lines.push(...cudaLines());
  const hub = hubSettings();
  lines.push(`Hugging Face cache: ${hub.cacheDir}`);
  lines.push(
    `Hub: ${hub.offline ? 'offline (HF_HUB_OFFLINE)' : hub.endpoint}, token ${hub.token !== undefined ? 'set' : 'none'}`,
  );
  if (folder !== undefined) lines.push(...(await folderLines(folder)));
  process.stdout.write(lines.map(escapeControl).join('\n') + '\n');
}

/**
 * Whether `folder`'s file system takes O_DIRECT (a probe file is written and read there, then removed;
 * in a read-only folder an existing file is read), and how much of its weight files the page cache
 * holds: what `--io auto` would choose for it as an input.
 */
async function folderLines(folder: string): Promise<string[]> {
  const addon = loadNativeAddon().addon;
  if (addon === undefined) return [`${folder}: O_DIRECT unknown (the native addon did not load)`];
  const st = await fs.promises.stat(folder).catch((e: Error) => e);
  if (st instanceof Error || !st.isDirectory()) {
    return [`${folder}: not a folder${st instanceof Error ? ` (${st.message})` : ''}`];
  }
  const probe = await addon.probeDirectIo(folder);
  const say = (answer: true | string): string => (answer === true ? 'yes' : `no (${answer})`);
  const lines = [
    `O_DIRECT in ${folder}: reads ${say(probe.read)}, writes ${say(probe.write)}` +
      (probe.read === true
        ? ''
        : '; --io direct reads fall back to buffered reads there, saying so in the report'),
  ];
  const weights = (await fs.promises.readdir(folder))
    .filter(
      (n) => n.endsWith('.safetensors') || n.endsWith('.bin') || n.endsWith('.pt') || n.endsWith('.pth'),
    )
    .sort()
    .map((n) => path.join(folder, n));
  if (weights.length > 0) {
    const [r] = await measureResidency(addon, [{ files: weights }]);
    const share = r!.bytes === 0 ? 0 : r!.cached / r!.bytes;
    lines.push(
      r!.exact
        ? `page cache: ${formatBytes(r!.cached)} of its ${weights.length} weight file(s)' ${formatBytes(r!.bytes)} ` +
            `(${(100 * share).toFixed(0)}%); --io auto reads it ${autoMode(r!)} ` +
            `(direct below ${100 * AUTO_CACHED_FRACTION}% cached)`
        : `page cache: unknown (the kernel answers only for files you own or may write); --io auto maps it`,
    );
  }
  return lines;
}

/** CUDA: compiled in or not, runtime and driver versions, each device, or why none can be used. */
function cudaLines(): string[] {
  const loaded = loadCudaAddon();
  if (loaded.addon === undefined) return [`CUDA: unavailable (${loaded.reason})`];
  const info = loaded.addon.cudaInfo();
  if (!info.compiled) return [`CUDA compiled in: no (${info.reason ?? ''})`];
  const lines = [
    `CUDA compiled in: yes (runtime ${info.runtimeVersion ?? '?'}, driver ${info.driverVersion ?? 'none'})`,
  ];
  for (const d of info.devices) {
    lines.push(
      `CUDA device ${d.index}: ${d.name}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB, ` +
        `compute capability ${d.computeCapability}, ${d.multiprocessors} SMs, PCI ${d.pciBusId}`,
    );
  }
  if (info.reason !== undefined) lines.push(`CUDA device: none (${info.reason})`);
  return lines;
}
