// Small DOM helpers. Text is always added as text nodes: nothing here parses HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

/**
 * Creates an element. Props: `class`, `dataset`, `on<event>` listeners, anything else as an
 * attribute (true: present, null/undefined/false: left out). Children: nodes or strings.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key.startsWith('on')) element.addEventListener(key.slice(2), value);
    else if (key === 'class') element.className = value;
    else if (key === 'dataset') Object.assign(element.dataset, value);
    else element.setAttribute(key, value === true ? '' : String(value));
  }
  element.append(...children.flat().filter((child) => child != null && child !== false));
  return element;
}

/** An icon from the sprite in index.html, hidden from assistive technology. */
export function icon(name, className = 'icon') {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('class', className);
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const use = document.createElementNS(SVG_NS, 'use');
  use.setAttribute('href', `#i-${name}`);
  svg.append(use);
  return svg;
}

const escapeRegExp = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * `text` as nodes, with every word that starts with one of `words` wrapped in <mark>
 * (the server's search matches word prefixes).
 */
export function highlighted(text, words) {
  const terms = words.filter(Boolean).map(escapeRegExp);
  if (!terms.length) return [text];
  const pattern = new RegExp(`(?<![\\p{L}\\p{N}])(?:${terms.join('|')})`, 'giu');
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    if (!match[0]) continue;
    nodes.push(text.slice(last, match.index), h('mark', {}, match[0]));
    last = match.index + match[0].length;
  }
  nodes.push(text.slice(last));
  return nodes.filter((node) => node !== '');
}

/** Copies `text`, and shows it on `button` (its icon becomes a check for a moment). */
export async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    return false;
  }
  const use = button.querySelector('use');
  const previous = use?.getAttribute('href');
  use?.setAttribute('href', '#i-check');
  setTimeout(() => use?.setAttribute('href', previous), 1500);
  return true;
}
