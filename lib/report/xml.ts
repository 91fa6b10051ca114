/**
 * The little XML an SVG needs: escaped text and attributes, and numbers written the same way on
 * every run (two decimals, no exponent, no negative zero), so equal reports give equal bytes.
 */

/** Characters XML 1.0 forbids even as references (C0 controls but tab/LF/CR, lone surrogates, U+FFFE/F). */
const NOT_XML =
  // eslint-disable-next-line no-control-regex
  /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
const ENTITIES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** Text or attribute value: markup escaped, characters XML cannot hold replaced by U+FFFD. */
export function escapeXml(s: string): string {
  return s.replace(NOT_XML, '\ufffd').replace(/[&<>"']/g, (c) => ENTITIES[c] as string);
}

/** A coordinate or length: at most two decimals. */
export function num(x: number): string {
  const r = Math.round(x * 100) / 100;
  return Object.is(r, -0) ? '0' : String(r);
}

export type Attrs = Record<string, string | number | undefined>;

function attrs(a: Attrs): string {
  let s = '';
  for (const [k, v] of Object.entries(a)) {
    if (v === undefined) continue;
    s += ` ${k}="${typeof v === 'number' ? num(v) : escapeXml(v)}"`;
  }
  return s;
}

/** `<tag a="…"/>`, or with `body` (already XML) `<tag a="…">body</tag>`. */
export function el(tag: string, a: Attrs, body?: string): string {
  return body === undefined ? `<${tag}${attrs(a)}/>` : `<${tag}${attrs(a)}>${body}</${tag}>`;
}

/** A `<text>` element holding `content` as escaped text. */
export function text(a: Attrs, content: string): string {
  return el('text', a, escapeXml(content));
}
