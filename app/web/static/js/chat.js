// The conversation: opening a session (newest messages first, older ones on scrolling up),
// sending a message and streaming the reply into its bubble, stopping it, and retrying.

import { ApiError, isAbort, request, streamChat } from './api.js';
import { copyText, h, icon } from './dom.js';
import { renderMarkdown } from './markdown.js';
import { formatDateTime } from './time.js';

const PAGE_SIZE = 50;
const NEAR_BOTTOM_PX = 80;
const STOP_WAIT_MS = 3000;

const NOTES = {
  stopped: 'Stopped',
  incomplete: 'This reply was interrupted before it finished.',
  failed: 'The assistant did not reply.',
  // A reply still being written when the chat was opened (by another tab, or before a restart).
  generating: 'This reply is still being written; reopen the chat to see the rest.',
  unsent: 'Not sent',
};

export class SessionNotFound extends Error {}

export class Chat {
  /**
   * callbacks: started(sessionId) (a new chat got its id), sent(sessionId, text),
   * replied(sessionId) (a reply ended), titled(sessionId, title) (a model wrote its title),
   * title() → the current session's title.
   */
  constructor(callbacks) {
    this.callbacks = callbacks;
    this.sessionId = null;
    this.messagesBefore = null;
    this.loadController = null;
    this.olderController = null;
    this.stream = null;
    this.lastMessage = null;

    this.thread = document.getElementById('thread');
    this.list = document.getElementById('messages');
    this.emptyState = document.getElementById('empty-state');
    this.loading = document.getElementById('thread-loading');
    this.errorBox = document.getElementById('chat-error');
    this.historySentinel = document.getElementById('history-sentinel');
    this.titleEl = document.getElementById('chat-title');
    this.form = document.getElementById('composer');
    this.input = document.getElementById('message');
    this.sendButton = document.getElementById('send');
    this.stopButton = document.getElementById('stop');
    this.latestButton = document.getElementById('scroll-latest');

    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener('keydown', (event) => {
      // Enter sends, Shift+Enter is a new line; never while an IME composes a character.
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      }
    });
    this.input.addEventListener('input', () => this.updateComposer());
    this.stopButton.addEventListener('click', () => this.stop());
    this.latestButton.addEventListener('click', () => this.scrollToBottom({ smooth: true }));
    this.thread.addEventListener('scroll', () => this.updateLatestButton(), { passive: true });
    // Older messages load when the top of the conversation comes into view.
    this.olderObserver = new IntersectionObserver(
      (entries) => {
        if (entries.some((entry) => entry.isIntersecting)) this.loadOlder();
      },
      { root: this.thread, rootMargin: '200px 0px 0px 0px' },
    );
  }

  // --- Opening ---------------------------------------------------------------------------

  /** An empty conversation; the first message creates the session. */
  newChat() {
    this.reset(null);
    this.setTitle('New chat');
    this.emptyState.hidden = false;
    this.updateComposer();
  }

  /** Shows a session's newest messages. Throws SessionNotFound for an unknown id. */
  async open(sessionId) {
    this.reset(sessionId);
    this.emptyState.hidden = true;
    this.loading.hidden = false;
    this.setTitle(this.callbacks.title(sessionId) ?? '');
    const controller = new AbortController();
    this.loadController = controller;
    this.updateComposer();
    let detail;
    try {
      detail = await request('GET', `/sessions/${encodeURIComponent(sessionId)}`, {
        query: { limit: PAGE_SIZE },
        signal: controller.signal,
      });
    } catch (error) {
      if (isAbort(error)) return;
      this.loading.hidden = true;
      if (error.status === 404 || error.status === 422) throw new SessionNotFound(error.message);
      this.showError(error.message, () => this.open(sessionId));
      return;
    } finally {
      if (this.loadController === controller) {
        this.loadController = null;
        this.updateComposer();
      }
    }
    this.loading.hidden = true;
    this.setTitle(detail.title);
    this.list.replaceChildren(...detail.messages.map((message) => this.messageElement(message)));
    this.emptyState.hidden = detail.messages.length > 0;
    this.setOlder(detail);
    this.scrollToBottom();
    this.olderObserver.observe(this.historySentinel);
  }

  reset(sessionId) {
    // Leaving a conversation stops reading its reply; the server still finishes and saves it.
    this.stream?.controller.abort();
    this.stream = null;
    this.loadController?.abort();
    this.loadController = null;
    this.olderController?.abort();
    this.olderController = null;
    this.olderObserver.unobserve(this.historySentinel);
    this.sessionId = sessionId;
    this.messagesBefore = null;
    this.lastMessage = null;
    this.list.replaceChildren();
    this.clearError();
    this.loading.hidden = true;
    this.historySentinel.hidden = true;
    this.historySentinel.classList.remove('is-loading');
    this.updateComposer();
  }

  setOlder(page) {
    this.messagesBefore = page.has_more_messages ? page.messages_before : null;
    this.historySentinel.hidden = this.messagesBefore == null;
  }

  async loadOlder() {
    if (this.messagesBefore == null || this.olderController || !this.sessionId) return;
    const controller = new AbortController();
    this.olderController = controller;
    this.historySentinel.classList.add('is-loading');
    try {
      const page = await request('GET', `/sessions/${encodeURIComponent(this.sessionId)}`, {
        query: { limit: PAGE_SIZE, before: this.messagesBefore },
        signal: controller.signal,
      });
      // Keep what is on screen where it is while older messages go in above it.
      const fromBottom = this.thread.scrollHeight - this.thread.scrollTop;
      this.list.prepend(...page.messages.map((message) => this.messageElement(message)));
      this.thread.scrollTop = this.thread.scrollHeight - fromBottom;
      this.setOlder(page);
    } catch (error) {
      if (isAbort(error)) return;
      this.historySentinel.hidden = true;
      this.showError(`Couldn't load older messages. ${error.message}`, () => {
        this.historySentinel.hidden = false;
        this.loadOlder();
      });
    } finally {
      if (this.olderController === controller) {
        this.olderController = null;
        this.historySentinel.classList.remove('is-loading');
        // Still in view (a short conversation): the observer reports it again.
        this.olderObserver.unobserve(this.historySentinel);
        if (this.messagesBefore != null) this.olderObserver.observe(this.historySentinel);
      }
    }
  }

  setTitle(title) {
    this.titleEl.textContent = title;
    document.title = title && title !== 'New chat' ? `${title} · Chat` : 'Chat';
  }

  // --- Messages --------------------------------------------------------------------------

  messageElement({ role, content, metadata = {}, created_at: createdAt }) {
    const status = metadata?.status ?? 'complete';
    const body = h('div', { class: 'message-body' });
    const item = h('li', {
      class: `message ${role}`,
      dataset: { role, status },
      title: createdAt ? formatDateTime(createdAt) : null,
    });
    item.append(body);
    if (role === 'assistant') item.prepend(h('div', { class: 'avatar', 'aria-hidden': 'true' }, icon('logo')));
    this.fill(item, content, metadata?.finish_reason === 'stopped' ? 'stopped' : status);
    return item;
  }

  /** Renders `text` into a message, with the note its status calls for. */
  fill(item, text, note) {
    const body = item.querySelector('.message-body');
    item.querySelector('.message-footer')?.remove();
    if (!text && NOTES[note]) {
      body.replaceChildren(h('p', { class: `message-note ${note}` }, NOTES[note]));
      return;
    }
    renderMarkdown(body, text);
    const footer = h('div', { class: 'message-footer' });
    if (NOTES[note]) footer.append(h('span', { class: `message-note ${note}` }, NOTES[note]));
    if (item.dataset.role === 'assistant' && text) {
      footer.append(
        h(
          'button',
          {
            type: 'button',
            class: 'icon-button small',
            'aria-label': 'Copy reply',
            onclick: (event) => copyText(text, event.currentTarget),
          },
          icon('copy'),
        ),
      );
    }
    if (footer.childElementCount) item.querySelector('.message-body').after(footer);
  }

  // --- Sending ---------------------------------------------------------------------------

  submit() {
    const text = this.input.value;
    // While a session loads, what is sent now would be replaced by what arrives.
    if (!text.trim() || this.stream || this.loadController) return;
    this.input.value = '';
    this.send(text);
  }

  async send(text) {
    this.clearError();
    this.emptyState.hidden = true;
    this.lastMessage = text;
    const userItem = this.messageElement({ role: 'user', content: text });
    const reply = this.messageElement({ role: 'assistant', content: '', metadata: { status: 'streaming' } });
    reply.setAttribute('aria-busy', 'true');
    this.list.append(userItem, reply);
    this.scrollToBottom();

    const stream = {
      controller: new AbortController(),
      sessionId: this.sessionId,
      saved: false, // the server has the user's message
      ended: false,
      stopped: false,
      text: '',
      frame: 0,
      userItem,
      reply,
    };
    this.stream = stream;
    this.updateComposer();
    const body = { message: text };
    if (this.sessionId) body.session_id = this.sessionId;
    try {
      await streamChat(body, { signal: stream.controller.signal, onEvent: (event) => this.onEvent(stream, event) });
      if (!stream.ended) throw new ApiError('The connection was lost before the reply finished.');
    } catch (error) {
      if (stream.stopped) this.finish(stream, 'incomplete', 'stopped');
      else if (!isAbort(error) && !stream.ended) {
        if (stream.saved) {
          this.finish(stream, stream.text ? 'incomplete' : 'failed');
        } else {
          // Refused before anything was saved (invalid, rate limited...): no reply to show.
          stream.ended = true;
          stream.reply.remove();
          stream.userItem.dataset.status = 'failed';
          this.fill(stream.userItem, text, 'unsent');
        }
        this.showError(error.message, () => this.retry(stream));
      }
    } finally {
      if (this.stream === stream) {
        this.stream = null;
        this.updateComposer();
      }
    }
  }

  onEvent(stream, { event, data }) {
    if (stream.ended) return;
    switch (event) {
      case 'session':
        stream.saved = true;
        stream.sessionId = data.session_id;
        if (this.stream === stream && this.sessionId !== data.session_id) {
          this.sessionId = data.session_id;
          this.callbacks.started(data.session_id);
        }
        this.callbacks.sent(data.session_id, this.lastMessage ?? '');
        break;
      case 'delta':
        stream.text += data.content;
        this.scheduleRender(stream);
        break;
      case 'title': // the model's title of a new session, already saved
        this.callbacks.titled(data.session_id, data.title);
        break;
      case 'done': {
        // `incomplete` here means stopped: a failure ends with an `error` event instead.
        const status = data.status ?? 'complete';
        this.finish(stream, status, status === 'incomplete' ? 'stopped' : status);
        this.callbacks.replied(stream.sessionId);
        break;
      }
      case 'error':
        this.finish(stream, stream.text ? 'incomplete' : 'failed');
        if (this.stream === stream) this.showError(data.detail ?? 'The assistant could not answer.', () => this.retry(stream));
        this.callbacks.replied(stream.sessionId);
        break;
      default:
        break;
    }
  }

  /** Re-renders the growing reply at most once per frame. */
  scheduleRender(stream) {
    if (stream.frame) return;
    stream.frame = requestAnimationFrame(() => {
      stream.frame = 0;
      if (stream.ended) return;
      const stick = this.isNearBottom();
      renderMarkdown(stream.reply.querySelector('.message-body'), stream.text);
      stream.reply.classList.toggle('has-text', Boolean(stream.text));
      if (stick) this.scrollToBottom();
    });
  }

  finish(stream, status, note = status) {
    if (stream.ended) return;
    stream.ended = true;
    cancelAnimationFrame(stream.frame);
    const stick = this.isNearBottom();
    stream.reply.dataset.status = status;
    stream.reply.removeAttribute('aria-busy');
    stream.reply.classList.toggle('has-text', Boolean(stream.text));
    this.fill(stream.reply, stream.text, note);
    if (stick) this.scrollToBottom();
  }

  /** Stops the reply: the server stops generating (and saves what it has), reading stops. */
  async stop() {
    const stream = this.stream;
    if (!stream || stream.stopped) return;
    stream.stopped = true;
    this.stopButton.disabled = true;
    if (stream.saved) {
      try {
        await request('POST', `/sessions/${encodeURIComponent(stream.sessionId)}/stop`, {
          signal: AbortSignal.timeout(STOP_WAIT_MS),
        });
      } catch {
        // 404: no such endpoint on this server (or the reply is over); reading stops anyway.
      }
    }
    if (!stream.ended) {
      stream.controller.abort();
      this.finish(stream, 'incomplete', 'stopped');
      this.callbacks.replied(stream.sessionId);
    }
  }

  /** Sends the last message again. One the server never got is taken off the screen first. */
  retry(stream) {
    this.clearError();
    if (!stream.saved) {
      stream.userItem.remove();
      stream.reply.remove();
    }
    this.send(this.lastMessage ?? '');
  }

  // --- Errors, composer, scrolling -------------------------------------------------------

  showError(message, retry) {
    this.errorBox.replaceChildren(
      h(
        'div',
        { class: 'alert', role: 'alert' },
        icon('alert'),
        h('p', { class: 'alert-text' }, message),
        h('button', { type: 'button', class: 'button small', onclick: retry }, icon('retry'), 'Retry'),
      ),
    );
    this.errorBox.hidden = false;
    this.scrollToBottom();
  }

  clearError() {
    this.errorBox.replaceChildren();
    this.errorBox.hidden = true;
  }

  updateComposer() {
    const streaming = Boolean(this.stream);
    this.stopButton.hidden = !streaming;
    this.stopButton.disabled = false;
    this.sendButton.hidden = streaming;
    this.sendButton.disabled = !this.input.value.trim() || Boolean(this.loadController);
    // Grows with the text, up to the height the stylesheet allows.
    this.input.style.height = 'auto';
    this.input.style.height = `${this.input.scrollHeight}px`;
  }

  focusComposer() {
    this.input.focus();
  }

  isNearBottom() {
    const { scrollHeight, scrollTop, clientHeight } = this.thread;
    return scrollHeight - scrollTop - clientHeight < NEAR_BOTTOM_PX;
  }

  scrollToBottom({ smooth = false } = {}) {
    this.thread.scrollTo({ top: this.thread.scrollHeight, behavior: smooth ? 'smooth' : 'instant' });
    this.updateLatestButton();
  }

  updateLatestButton() {
    this.latestButton.hidden = this.isNearBottom();
  }
}
