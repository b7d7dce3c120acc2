// Messages as Markdown, safely: marked turns the text into HTML in which any raw HTML of the
// message is escaped (it shows as text), then DOMPurify keeps only the tags and attributes
// Markdown produces and hands back DOM nodes, so no string is ever assigned to innerHTML.

import { Marked } from '../vendor/marked.esm.js';
import DOMPurify from '../vendor/purify.es.mjs';
import { copyText, h, icon } from './dom.js';

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (char) => ESCAPES[char]);

const marked = new Marked({ gfm: true, breaks: true, async: false });
marked.use({
  renderer: {
    // What a user or a model typed as HTML is text, never markup.
    html({ text, block }) {
      return block ? `<p class="raw-html">${escapeHtml(text.trim())}</p>` : escapeHtml(text);
    },
    // Images would load from anywhere (the page's CSP blocks them anyway): link them instead.
    image({ href, text }) {
      return `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`;
    },
    checkbox({ checked }) {
      return checked ? '☑ ' : '☐ ';
    },
  },
});

const purify = DOMPurify(window);
const CONFIG = {
  ALLOWED_TAGS: [
    'a', 'b', 'blockquote', 'br', 'code', 'del', 'em', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'hr',
    'i', 'li', 'ol', 'p', 'pre', 's', 'strong', 'sub', 'sup', 'table', 'tbody', 'td', 'th',
    'thead', 'tr', 'ul',
  ],
  ALLOWED_ATTR: ['href', 'title', 'class', 'start', 'align'],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#)/i,
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};
const LANGUAGE_CLASS = /^language-[\w#+.-]{1,40}$/;

purify.addHook('uponSanitizeAttribute', (node, data) => {
  if (data.attrName !== 'class') return;
  // Only marked's own classes: a code block's language, and raw HTML shown as text.
  const allowed =
    (node.nodeName === 'CODE' && LANGUAGE_CLASS.test(data.attrValue)) ||
    (node.nodeName === 'P' && data.attrValue === 'raw-html');
  if (!allowed) data.keepAttr = false;
});
purify.addHook('afterSanitizeAttributes', (node) => {
  if (node.nodeName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer nofollow');
  }
});

/** Replaces the content of `target` with `text` rendered as Markdown. */
export function renderMarkdown(target, text) {
  const fragment = purify.sanitize(marked.parse(text), CONFIG);
  for (const pre of fragment.querySelectorAll('pre')) decorateCodeBlock(pre);
  target.replaceChildren(fragment);
}

/** A header over each code block: its language and a copy button. */
function decorateCodeBlock(pre) {
  const code = pre.querySelector('code');
  const language = code?.className.match(LANGUAGE_CLASS)?.[0].slice('language-'.length) ?? '';
  const copy = h(
    'button',
    {
      type: 'button',
      class: 'code-copy',
      'aria-label': 'Copy code',
      onclick: (event) => copyText(code?.textContent ?? '', event.currentTarget),
    },
    icon('copy'),
  );
  const block = h('div', { class: 'code-block' }, h('div', { class: 'code-header' }, h('span', {}, language), copy));
  pre.replaceWith(block);
  block.append(pre);
}
