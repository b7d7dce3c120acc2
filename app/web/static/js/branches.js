// A session is a tree of messages: editing a message, regenerating a reply, and the
// "‹ 2 / 3 ›" arrows between the versions of a message (its siblings). Switching asks the
// server, which remembers the branch chosen at every fork: a reload shows the same one, and
// nothing is kept in the browser.

import { request } from './api.js';
import { h, icon } from './dom.js';

const finePointer = window.matchMedia('(pointer: fine)');

export class Branches {
  /** `chat`: the conversation (chat.js). callbacks: switched(summary) (another branch is current). */
  constructor(chat, callbacks) {
    this.chat = chat;
    this.callbacks = callbacks;
    this.messages = new WeakMap(); // message element → { id, siblingIds, content }
    this.editing = null; // { item, close(restoreFocus) }
    this.status = document.getElementById('versions-status');
  }

  /** The stored message an element shows: its `id`, `sibling_ids` and `content`. */
  track(item, message) {
    this.messages.set(item, {
      id: message.id,
      siblingIds: message.sibling_ids?.length ? message.sibling_ids : [message.id],
      content: message.content ?? this.messages.get(item)?.content ?? '',
    });
  }

  /** {item, id, siblingIds, content} of a message on screen, or null for one not stored yet. */
  target(item) {
    const message = this.messages.get(item);
    return message ? { item, ...message } : null;
  }

  /** Adds a message's controls to its toolbar: the versions, and Edit or Regenerate. */
  addActions(item, actions) {
    const message = this.messages.get(item);
    if (!message) return;
    const { role, status } = item.dataset;
    if (message.siblingIds.length > 1) actions.prepend(this.versions(item, message));
    if (role === 'user') {
      actions.append(this.control('Edit message', 'edit', 'edit-button', () => this.edit(item)));
    } else if (role === 'assistant' && status !== 'streaming' && status !== 'generating') {
      actions.append(this.control('Regenerate reply', 'retry', 'regenerate-button', () => this.regenerate(item)));
    }
  }

  /** "‹ 2 / 3 ›": the previous and next versions of a message. */
  versions(item, { id, siblingIds }) {
    const index = siblingIds.indexOf(id);
    const previous = siblingIds[index - 1];
    const next = siblingIds[index + 1];
    return h(
      'div',
      { class: 'versions', role: 'group', 'aria-label': 'Versions' },
      this.control('Previous version', 'prev', 'version-previous', () => this.switchTo(item, previous, 'previous'), !previous),
      h('span', { class: 'versions-label', 'aria-live': 'polite' }, `${index + 1} / ${siblingIds.length}`),
      this.control('Next version', 'next', 'version-next', () => this.switchTo(item, next, 'next'), !next),
    );
  }

  /** A button that only works while no reply streams (see setBusy); `edge`: never enabled. */
  control(label, iconName, className, action, edge = false) {
    return h(
      'button',
      {
        type: 'button',
        class: `icon-button small ${className}`,
        'aria-label': label,
        title: label,
        disabled: edge || this.chat.busy,
        dataset: { branchControl: edge ? 'edge' : 'on' },
        onclick: action,
      },
      icon(iconName),
    );
  }

  /** While a reply streams or the conversation loads, nothing can be edited or switched. */
  setBusy(busy) {
    for (const control of this.chat.list.querySelectorAll('[data-branch-control]')) {
      control.disabled = busy || control.dataset.branchControl === 'edge';
    }
  }

  // --- Switching -------------------------------------------------------------------------

  /** Makes current the version `targetId` of the message `item` shows. */
  async switchTo(item, targetId, direction) {
    const { chat } = this;
    const sessionId = chat.sessionId;
    if (!targetId || !sessionId || chat.busy) return;
    const path = `/sessions/${encodeURIComponent(sessionId)}`;
    const shown = await chat.reload(
      async (signal) => {
        const detail = await request('PUT', `${path}/branch`, {
          query: { limit: chat.pageSize },
          body: { message_id: targetId },
          signal,
        });
        this.callbacks.switched(summaryOf(detail));
        // A long branch below the chosen version: the pages up to it, so that it stays in view.
        let page = detail;
        const all = [...detail.messages];
        while (!all.some((message) => message.id === targetId) && page.has_more_messages && page.messages_before != null) {
          page = await request('GET', path, { query: { limit: chat.pageSize, before: page.messages_before }, signal });
          all.unshift(...page.messages);
        }
        return { ...detail, messages: all, has_more_messages: page.has_more_messages, messages_before: page.messages_before };
      },
      { anchor: item, anchorId: targetId },
    );
    if (!shown) return;
    const moved = chat.itemOf(targetId);
    const message = moved && this.messages.get(moved);
    if (!moved || !message) return;
    // Focus stays on the arrows (the same one, unless that end is reached).
    const [same, other] = direction === 'next' ? ['.version-next', '.version-previous'] : ['.version-previous', '.version-next'];
    const button = [same, other].map((selector) => moved.querySelector(selector)).find((found) => found && !found.disabled);
    button?.focus({ preventScroll: true });
    if (this.status) {
      const position = message.siblingIds.indexOf(message.id) + 1;
      this.status.textContent = `Version ${position} of ${message.siblingIds.length}`;
    }
  }

  // --- Regenerating ----------------------------------------------------------------------

  regenerate(item) {
    const target = this.target(item);
    if (!target || this.chat.busy) return;
    const hadFocus = item.contains(document.activeElement);
    this.chat.regenerate(target);
    // The button went with the old reply: Stop is where the keyboard can act on the new one.
    if (hadFocus && !this.chat.stopButton.hidden) this.chat.stopButton.focus();
  }

  // --- Editing ---------------------------------------------------------------------------

  /** Turns a user message into a text field: Enter (or Save & send) sends it as an edit. */
  edit(item) {
    const message = this.messages.get(item);
    if (!message || this.chat.busy) return;
    this.editing?.close(false);
    const body = item.querySelector('.message-body');
    const footer = item.querySelector('.message-footer');
    const input = h('textarea', { class: 'edit-input', 'aria-label': 'Edited message', rows: 1, enterkeyhint: 'send' });
    input.value = message.content;
    const save = h('button', { type: 'submit', class: 'button small primary' }, 'Save & send');
    const cancel = h('button', { type: 'button', class: 'button small', onclick: () => close(true) }, 'Cancel');
    const form = h('form', { class: 'message-edit' }, input, h('div', { class: 'message-edit-actions' }, cancel, save));

    const close = (restoreFocus) => {
      if (this.editing?.item === item) this.editing = null;
      form.remove();
      body.hidden = false;
      if (footer) footer.hidden = false;
      item.classList.remove('is-editing');
      if (restoreFocus) item.querySelector('.edit-button')?.focus();
    };
    const submit = () => {
      const text = input.value;
      if (!text.trim() || this.chat.busy) return;
      close(false);
      this.chat.send(text, { editOf: { item, ...message } });
      if (finePointer.matches) this.chat.focusComposer();
    };
    const grow = () => {
      input.style.height = 'auto';
      input.style.height = `${input.scrollHeight}px`;
      save.disabled = !input.value.trim();
    };

    form.addEventListener('submit', (event) => {
      event.preventDefault();
      submit();
    });
    input.addEventListener('keydown', (event) => {
      // As in the composer: Enter sends, Shift+Enter is a new line; Escape gives up.
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        submit();
      } else if (event.key === 'Escape') {
        event.preventDefault();
        event.stopPropagation();
        close(true);
      }
    });
    input.addEventListener('input', grow);

    this.editing = { item, close };
    item.classList.add('is-editing');
    body.hidden = true;
    if (footer) footer.hidden = true;
    body.after(form);
    grow();
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }
}

/** The sidebar's fields of a session's detail. */
function summaryOf(detail) {
  const summary = { ...detail };
  for (const key of ['messages', 'has_more_messages', 'messages_before', 'current_message_id']) delete summary[key];
  return summary;
}
