/**
 * Viridis (van der Walt & Smith, matplotlib's default colour map): perceptually uniform, legible in
 * grey and to the common colour-vision deficiencies. Eleven samples, linearly interpolated.
 */
const VIRIDIS: readonly (readonly [number, number, number])[] = [
  [0x44, 0x01, 0x54],
  [0x48, 0x24, 0x75],
  [0x41, 0x44, 0x87],
  [0x35, 0x5f, 0x8d],
  [0x2a, 0x78, 0x8e],
  [0x21, 0x91, 0x8c],
  [0x22, 0xa8, 0x84],
  [0x44, 0xbf, 0x70],
  [0x7a, 0xd1, 0x51],
  [0xbd, 0xdf, 0x26],
  [0xfd, 0xe7, 0x25],
];

function rgbAt(f: number): [number, number, number] {
  const x = Math.min(1, Math.max(0, Number.isNaN(f) ? 0 : f)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const a = VIRIDIS[i] as readonly number[];
  const b = VIRIDIS[i + 1] as readonly number[];
  const w = x - i;
  return [0, 1, 2].map((k) => Math.round((a[k] as number) + w * ((b[k] as number) - (a[k] as number)))) as [
    number,
    number,
    number,
  ];
}

const hex = (rgb: readonly number[]): string =>
  '#' + rgb.map((c) => c.toString(16).padStart(2, '0')).join('');

/** The colour of fraction `f` ∈ [0, 1] of the scale (clamped). */
export function viridis(f: number): string {
  return hex(rgbAt(f));
}

/** Black or white, whichever reads better on the scale's colour at `f`. */
export function inkOn(f: number): string {
  const [r, g, b] = rgbAt(f).map((c) => {
    const s = c / 255;
    return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  }) as [number, number, number];
  return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.18 ? '#000000' : '#ffffff';
}
