import * as os from 'node:os';
import { backendEntries, createBackend } from '../engine/registry';
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
  const hub = hubSettings();
  lines.push(`Hugging Face cache: ${hub.cacheDir}`);
  lines.push(
    `Hub: ${hub.offline ? 'offline (HF_HUB_OFFLINE)' : hub.endpoint}, token ${hub.token !== undefined ? 'set' : 'none'}`,
  );
  process.stdout.write(lines.join('\n') + '\n');
}
