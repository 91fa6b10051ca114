import * as os from 'node:os';
import { selectBackend } from '../engine/select';
import { loadNativeAddon } from '../engine/native';
import { hubSettings } from '../hub/settings';

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
  lines.push(`CUDA compiled in: ${info.cudaCompiled ? 'yes' : 'no'}`);
  lines.push(`CUDA device: ${info.cudaDevice ?? 'none'}`);
  const hub = hubSettings();
  lines.push(`Hugging Face cache: ${hub.cacheDir}`);
  lines.push(
    `Hub: ${hub.offline ? 'offline (HF_HUB_OFFLINE)' : hub.endpoint}, token ${hub.token !== undefined ? 'set' : 'none'}`,
  );
  void backend.dispose();
  process.stdout.write(lines.join('\n') + '\n');
}
