// The read-only page of a share link (/s/<id>): the snapshot's title and messages, rendered
// as the chat page renders them (Markdown as inert text), with nothing to send or change.
// No token is sent: a link is read without signing in.

import { h, icon } from './dom.js';
import { renderMarkdown } from './markdown.js';
import { formatDateTime } from './time.js';

const $ = (id) => document.getElementById(id);
const shareId = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() ?? '');

function messageElement({ role, content, created_at: createdAt }) {
  const body = h('div', { class: 'message-body' });
  renderMarkdown(body, content);
  const item = h('li', { class: `message ${role}`, dataset: { role }, title: formatDateTime(createdAt) }, body);
  if (role === 'assistant') item.prepend(h('div', { class: 'avatar', 'aria-hidden': 'true' }, icon('logo')));
  return item;
}

function showMissing() {
  $('shared-missing').hidden = false;
  document.title = 'Link not found · Chat';
}

function showError(text) {
  const box = $('shared-error');
  box.replaceChildren(h('div', { class: 'alert', role: 'alert' }, icon('alert'), h('span', { class: 'alert-text' }, text)));
  box.hidden = false;
}

async function load() {
  let response;
  try {
    response = await fetch(`/api/v1/shared/${encodeURIComponent(shareId)}`, {
      headers: { Accept: 'application/json' },
      credentials: 'omit',
    });
  } catch {
    showError('Could not reach the server. Check your connection and reload the page.');
    return;
  }
  // A malformed id (422) is as missing as an unknown one.
  if (response.status === 404 || response.status === 422) {
    showMissing();
    return;
  }
  if (response.status === 429) {
    showError('Too many requests from your network. Wait a minute, then reload the page.');
    return;
  }
  if (!response.ok) {
    showError(`The server answered ${response.status}. Reload the page to try again.`);
    return;
  }
  const shared = await response.json();
  $('chat-title').textContent = shared.title;
  document.title = `${shared.title} · Shared chat`;
  const note = $('shared-note');
  note.textContent = `Shared on ${formatDateTime(shared.created_at)}. Messages sent after that are not shown.`;
  note.hidden = false;
  $('messages').replaceChildren(...shared.messages.map(messageElement));
}

try {
  await load();
} finally {
  $('thread-loading').hidden = true;
}
