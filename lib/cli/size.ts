/** Parses byte sizes the way users write them: 5GB (10^9), 5GiB (2^30), 500M, 1e9, plain bytes. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmgt]?)(i?)b?\s*$/i.exec(text);
  if (m === null) throw new Error(`"${text}" is not a size (examples: 5GB, 500MiB, 1000000)`);
  const value = Number(m[1]);
  const unit = (m[2] ?? '').toLowerCase();
  const base = m[3] === 'i' || m[3] === 'I' ? 1024 : 1000;
  const power = ['', 'k', 'm', 'g', 't'].indexOf(unit);
  const bytes = Math.round(value * base ** power);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new Error(`"${text}" is not a positive size`);
  return bytes;
}

export function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}
