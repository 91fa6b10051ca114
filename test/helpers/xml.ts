/** A strict XML parse (saxes: every well-formedness error throws) into a small tree for assertions. */
import { SaxesParser } from 'saxes';

export interface XmlNode {
  readonly name: string;
  readonly attributes: Record<string, string>;
  readonly children: XmlNode[];
  /** The text directly inside this element, entities decoded. */
  text: string;
}

export function parseXml(xml: string): XmlNode {
  const parser = new SaxesParser();
  const root: XmlNode = { name: '#document', attributes: {}, children: [], text: '' };
  const stack: XmlNode[] = [root];
  parser.on('opentag', (tag) => {
    const node: XmlNode = {
      name: tag.name,
      attributes: { ...(tag.attributes as Record<string, string>) },
      children: [],
      text: '',
    };
    stack[stack.length - 1]!.children.push(node);
    stack.push(node);
  });
  parser.on('closetag', () => void stack.pop());
  parser.on('text', (t) => {
    stack[stack.length - 1]!.text += t;
  });
  parser.write(xml).close();
  const doc = root.children[0];
  if (doc === undefined || root.children.length !== 1) throw new Error('expected one root element');
  return doc;
}

/** Every element under `node` (itself included), depth first, in document order. */
export function allElements(node: XmlNode): XmlNode[] {
  return [node, ...node.children.flatMap(allElements)];
}
