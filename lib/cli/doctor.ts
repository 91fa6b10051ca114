import * as os from 'node:os';
import { backendEntries, createBackend } from '../engine/registry';
import { loadCudaAddon } from '../engine/cuda/addon';
import { hubSettings } from '../hub/settings';

/** `model-stock doctor`: what this machine will merge with, and why. */
export async function doctor(): Promise<void> {
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
  process.stdout.write(lines.join('\n') + '\n');
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
