import * as os from 'node:os';
import { selectBackend } from '../engine/select';
import { loadNativeAddon } from '../engine/native';
import { loadCudaAddon } from '../engine/cuda/addon';

/** `model-stock doctor`: what this machine will merge with, and why. */
export function doctor(): void {
  const loaded = loadNativeAddon();
  const lines: string[] = [];
  lines.push(`node ${process.version} on ${os.platform()} ${os.arch()}, ${os.cpus().length} cores`);
  if (loaded.addon === undefined) {
    lines.push('native addon: not loaded');
    for (const r of loaded.reasons) lines.push(`  - ${r}`);
  } else {
    lines.push('native addon: loaded');
  }
  const backend = selectBackend('auto', { onWarning: () => undefined });
  const info = backend.info();
  lines.push(`backend (auto): ${info.name}`);
  lines.push(`instruction set: ${info.isa}`);
  lines.push(`threads: ${info.threads}`);
  lines.push(...cudaLines());
  void backend.dispose();
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
