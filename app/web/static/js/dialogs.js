// Modal dialogs from index.html (native <dialog>: focus is trapped inside, Escape cancels,
// and focus returns to where it was when they close).

import { request } from './api.js';
import { h, icon } from './dom.js';
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

/** Shows `message` in a dialog's error line, or hides the line when it is empty. */
function showError(element, message) {
  element.textContent = message ?? '';
  element.hidden = !message;
}

/**
 * Asks for a name (a new folder, a folder's new name). `save(name)` does the change and resolves
 * to an error message to show in the dialog (it stays open, the name kept for correcting) or to
 * null when done; the dialog then closes. Resolves true if something was saved.
 */
export function askName({ title, value = '', submitLabel = 'Save', save }) {
  const $ = (id) => document.getElementById(id);
  const dialog = $('name-dialog');
  const input = $('name-input');
  const error = $('name-error');
  const listeners = new AbortController();
  const { signal } = listeners;
  $('name-title').textContent = title;
  $('name-submit').textContent = submitLabel;
  showError(error, '');
  input.value = value;
  return new Promise((resolve) => {
    let saved = false;
    $('name-form').addEventListener(
      'submit',
      async (event) => {
        event.preventDefault();
        const name = input.value.trim();
        if (!name) {
          showError(error, 'Type a name.');
          input.focus();
          return;
        }
        const failure = await save(name);
        if (failure) {
          showError(error, failure);
          input.focus();
          return;
        }
        saved = true;
        dialog.close();
      },
      { signal },
    );
    $('name-cancel').addEventListener('click', () => dialog.close(), { signal });
    dialog.addEventListener(
      'close',
      () => {
        listeners.abort();
        resolve(saved);
      },
      { signal },
    );
    dialog.showModal();
    input.select();
  });
}

/**
 * Asks whether to delete a folder, and what becomes of its chats: by default they move to the
 * folder's parent (or the top); ticked, they are deleted with it. Resolves to null (cancelled)
 * or { deleteSessions }.
 */
export function confirmFolderDelete(folder) {
  const $ = (id) => document.getElementById(id);
  const dialog = $('folder-delete-dialog');
  const checkbox = $('folder-delete-sessions');
  const where = folder.parent_id ? 'its parent folder' : 'the top of the list';
  $('folder-delete-title').textContent = `Delete folder "${folder.name}"?`;
  $('folder-delete-text').textContent = `Its subfolders move to ${where}; its chats too, unless you tick the box.`;
  const count = folder.session_count ?? 0;
  $('folder-delete-sessions-label').textContent = count
    ? `Delete its ${count} chat${count === 1 ? '' : 's'} too`
    : 'Delete its chats too';
  checkbox.checked = false;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener(
      'close',
      () => resolve(dialog.returnValue === 'delete' ? { deleteSessions: checkbox.checked } : null),
      { once: true },
    );
  });
}

/** Tags that differ only in case or Unicode form are one tag; the server's rule (NFC and
 * casefold) decides, this only keeps the dialog from showing the same tag twice. */
const fold = (tag) => tag.normalize('NFC').toLowerCase();
const sameTag = (a, b) => fold(a) === fold(b);

/**
 * Edits a session's tags: chips with a remove button, a field that adds a tag on Enter or a
 * comma and suggests the user's existing tags (`known`). `save(tags)` resolves to an error
 * message (shown, the dialog stays open) or null (done, the dialog closes).
 */
export function editTags({ title, tags, known, save }) {
  const $ = (id) => document.getElementById(id);
  const dialog = $('tags-dialog');
  const input = $('tags-input');
  const chips = $('tags-chips');
  const error = $('tags-error');
  const listeners = new AbortController();
  const { signal } = listeners;
  let current = [...tags];

  const render = () => {
    chips.replaceChildren(
      ...current.map((tag) =>
        h(
          'li',
          { class: 'tag-chip editable' },
          h('span', { dir: 'auto' }, tag),
          h(
            'button',
            {
              type: 'button',
              class: 'tag-remove',
              'aria-label': `Remove tag ${tag}`,
              onclick: () => {
                current = current.filter((other) => other !== tag);
                render();
                input.focus();
              },
            },
            icon('close'),
          ),
        ),
      ),
    );
    $('tags-known').replaceChildren(
      ...known.filter((tag) => !current.some((other) => sameTag(other, tag))).map((tag) => h('option', { value: tag })),
    );
  };

  /** Adds what is typed (one or more tags, comma-separated); false if nothing was typed. */
  const addTyped = () => {
    const typed = input.value.split(',').map((tag) => tag.replace(/\s+/g, ' ').trim()).filter(Boolean);
    input.value = '';
    for (const tag of typed) if (!current.some((other) => sameTag(other, tag))) current.push(tag);
    render();
    return typed.length > 0;
  };

  input.addEventListener(
    'keydown',
    (event) => {
      if (event.key === ',' || (event.key === 'Enter' && input.value.trim())) {
        event.preventDefault();
        addTyped();
      } else if (event.key === 'Backspace' && !input.value && current.length) {
        current = current.slice(0, -1);
        render();
      }
    },
    { signal },
  );
  // Picking a suggestion fills the field: take it as a tag at once.
  input.addEventListener(
    'input',
    (event) => {
      if (event.inputType === 'insertReplacementText') addTyped();
    },
    { signal },
  );

  $('tags-name').textContent = title;
  showError(error, '');
  input.value = '';
  render();
  return new Promise((resolve) => {
    let saved = false;
    $('tags-form').addEventListener(
      'submit',
      async (event) => {
        event.preventDefault();
        addTyped(); // a tag typed but not yet added counts
        const failure = await save(current);
        if (failure) {
          showError(error, failure);
          return;
        }
        saved = true;
        dialog.close();
      },
      { signal },
    );
    $('tags-cancel').addEventListener('click', () => dialog.close(), { signal });
    dialog.addEventListener(
      'close',
      () => {
        listeners.abort();
        resolve(saved);
      },
      { signal },
    );
    dialog.showModal();
    input.focus();
  });
}
