// Modal dialogs from index.html (native <dialog>: focus is trapped inside, Escape cancels,
// and focus returns to where it was when they close).

import { request } from './api.js';
import { h } from './dom.js';
import { formatDateTime } from './time.js';

/** Asks whether to delete the chat named `title`; resolves true if confirmed. */
export function confirmDelete(title) {
  const dialog = document.getElementById('delete-dialog');
  document.getElementById('delete-name').textContent = title;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'delete'), { once: true });
  });
}

/** The sign-in dialog: asks for an access token, and calls `onToken(token)` with it. */
export function createSignIn({ onToken }) {
  const dialog = document.getElementById('signin-dialog');
  const form = document.getElementById('signin-form');
  const input = document.getElementById('token-input');
  const error = document.getElementById('signin-error');
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    input.value = '';
    dialog.close();
    onToken(token);
  });
  return {
    open(message) {
      error.textContent = message ?? '';
      error.hidden = !message;
      if (!dialog.open) dialog.showModal();
      input.focus();
    },
    get isOpen() {
      return dialog.open;
    },
  };
}

const absolute = (url) => new URL(url, location.origin).href;

/**
 * The share dialog of a session: creates a read-only link (with an optional expiry), shows it
 * with a Copy button, and lists the session's live links, each with Revoke.
 */
export function openShareDialog(session) {
  const $ = (id) => document.getElementById(id);
  const dialog = $('share-dialog');
  const error = $('share-error');
  const created = $('share-created');
  const urlField = $('share-url');
  const list = $('share-list');
  const none = $('share-none');
  const path = `/sessions/${encodeURIComponent(session.session_id)}/shares`;
  const controller = new AbortController();
  const { signal } = controller;

  const fail = (message) => {
    error.textContent = message;
    error.hidden = !message;
  };

  const render = (links) => {
    none.hidden = links.length > 0;
    list.replaceChildren(
      ...links.map((link) =>
        h(
          'li',
          { class: 'share-item', dataset: { shareId: link.share_id } },
          h('a', { href: absolute(link.url), target: '_blank', rel: 'noopener noreferrer' }, absolute(link.url)),
          h('span', { class: 'share-expiry' }, link.expires_at ? `until ${formatDateTime(link.expires_at)}` : 'no expiry'),
          h(
            'button',
            {
              type: 'button',
              class: 'button danger',
              'aria-label': `Revoke ${absolute(link.url)}`,
              onclick: () => revoke(link.share_id),
            },
            'Revoke',
          ),
        ),
      ),
    );
  };

  const refresh = async () => {
    try {
      const page = await request('GET', '/shares', { query: { session_id: session.session_id }, signal });
      render(page.shares);
    } catch (err) {
      if (!signal.aborted) fail(err.status === 404 ? 'Sharing is turned off on this server.' : err.message);
    }
  };

  const revoke = async (shareId) => {
    fail('');
    try {
      await request('DELETE', `/shares/${encodeURIComponent(shareId)}`, { signal });
    } catch (err) {
      if (err.status !== 404) {
        fail(err.message);
        return;
      }
    }
    if (urlField.dataset.shareId === shareId) created.hidden = true;
    await refresh();
  };

  $('share-create').onclick = async () => {
    fail('');
    const days = $('share-expiry').value;
    try {
      const link = await request('POST', path, { body: days ? { expires_in_days: Number(days) } : {}, signal });
      urlField.value = absolute(link.url);
      urlField.dataset.shareId = link.share_id;
      created.hidden = false;
      urlField.select();
    } catch (err) {
      if (!signal.aborted) fail(err.status === 404 ? 'This chat cannot be shared (it does not exist, or sharing is turned off).' : err.message);
      return;
    }
    await refresh();
  };

  $('share-copy').onclick = async (event) => {
    const button = event.currentTarget;
    try {
      await navigator.clipboard.writeText(urlField.value);
    } catch {
      urlField.select(); // copying was refused: the link is selected for Ctrl+C instead
      return;
    }
    button.textContent = 'Copied';
    setTimeout(() => (button.textContent = 'Copy'), 1500);
  };

  $('share-name').textContent = session.title;
  fail('');
  created.hidden = true;
  urlField.value = '';
  delete urlField.dataset.shareId;
  list.replaceChildren();
  none.hidden = true;
  dialog.addEventListener('close', () => controller.abort(), { once: true });
  dialog.showModal();
  refresh();
}
