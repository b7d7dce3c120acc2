// Thumbs up or down on a finished reply, with an optional comment (PUT and DELETE
// /sessions/{id}/messages/{id}/feedback). Clicking the thumb that is on clears the rating.

import { request } from './api.js';
import { h, icon } from './dom.js';

const COMMENT_MAX_CHARS = 2000;
const THUMBS = [
  { rating: 'up', label: 'Good reply', icon: 'thumb-up' },
  { rating: 'down', label: 'Bad reply', icon: 'thumb-down' },
];

/**
 * The rating controls of the reply `messageId` of session `sessionId`, showing `feedback`
 * (`{rating, comment}` as the API answers it, or null).
 */
export function feedbackControls(sessionId, messageId, feedback) {
  const path = `/sessions/${encodeURIComponent(sessionId)}/messages/${encodeURIComponent(messageId)}/feedback`;
  let current = feedback ?? null;
  let busy = false;

  const thumbs = THUMBS.map(({ rating, label, icon: name }) =>
    h(
      'button',
      {
        type: 'button',
        class: 'icon-button small feedback-thumb',
        'aria-label': label,
        'aria-pressed': 'false',
        dataset: { rating },
        onclick: () => choose(rating),
      },
      icon(name),
    ),
  );
  const comment = h('p', { class: 'feedback-comment', hidden: true });
  const error = h('p', { class: 'feedback-error', role: 'alert', hidden: true });
  const input = h('textarea', {
    class: 'feedback-input',
    rows: '2',
    maxlength: String(COMMENT_MAX_CHARS),
    'aria-label': 'Comment on this reply (optional)',
    placeholder: 'What was good or bad about it? (optional)',
  });
  const form = h(
    'form',
    { class: 'feedback-form', hidden: true, onsubmit: (event) => { event.preventDefault(); saveComment(); } },
    input,
    h(
      'div',
      { class: 'feedback-actions' },
      h('button', { type: 'button', class: 'button small', onclick: () => closeForm() }, 'Skip'),
      h('button', { type: 'submit', class: 'button small primary' }, 'Save comment'),
    ),
  );
  form.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') closeForm();
  });
  const group = h(
    'div',
    { class: 'feedback', role: 'group', 'aria-label': 'Rate this reply' },
    ...thumbs,
    comment,
    form,
    error,
  );

  function show() {
    for (const thumb of thumbs) {
      thumb.setAttribute('aria-pressed', String(current?.rating === thumb.dataset.rating));
      thumb.disabled = busy;
    }
    comment.textContent = current?.comment ?? '';
    comment.hidden = !current?.comment || !form.hidden;
  }

  async function save(action) {
    busy = true;
    error.hidden = true;
    show();
    try {
      return await action();
    } catch (failure) {
      error.textContent = `Couldn't save your rating. ${failure.message}`;
      error.hidden = false;
      return undefined;
    } finally {
      busy = false;
      show();
    }
  }

  async function choose(rating) {
    if (busy) return;
    if (current?.rating === rating) {
      // The active thumb again: the rating is taken back.
      const done = await save(() => request('DELETE', path));
      if (done !== undefined) {
        current = null;
        closeForm();
      }
      return;
    }
    // A new rating replaces the old one, comment included; a comment may follow.
    const saved = await save(() => request('PUT', path, { body: { rating } }));
    if (saved) {
      current = saved;
      input.value = '';
      form.hidden = false;
      show();
      input.focus();
    }
  }

  async function saveComment() {
    if (busy || !current) return;
    const saved = await save(() =>
      request('PUT', path, { body: { rating: current.rating, comment: input.value } }),
    );
    if (saved) {
      current = saved;
      closeForm();
    }
  }

  function closeForm() {
    form.hidden = true;
    show();
  }

  show();
  return group;
}
