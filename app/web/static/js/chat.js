// The conversation: opening a session (newest messages first, older ones on scrolling up),
// sending a message and streaming the reply into its bubble, stopping it, and retrying.
// Editing, regenerating and the versions of a message are branches.js's.

import { ApiError, isAbort, newIdempotencyKey, request, resumeStream, streamChat, streamRegenerate } from './api.js';
import { Branches } from './branches.js';
import { copyText, h, icon } from './dom.js';
import { feedbackControls } from './feedback.js';
import { renderMarkdown } from './markdown.js';
import { formatDateTime } from './time.js';

const PAGE_SIZE = 50;
const NEAR_BOTTOM_PX = 80;
const STOP_WAIT_MS = 3000;
// A stream cut by the network is resumed after these pauses, from its last event.
const RESUME_DELAYS_MS = [250, 1000, 2000, 4000, 8000];

const NOTES = {
  stopped: 'Stopped',
  incomplete: 'This reply was interrupted before it finished.',
  failed: 'The assistant did not reply.',
  // A reply still being written when the chat was opened, whose stream could not be followed.
  generating: 'This reply is still being written; reopen the chat to see the rest.',
  unsent: 'Not sent',
};

export class SessionNotFound extends Error {}

export class Chat {
  /**
   * callbacks: started(sessionId) (a new chat got its id), sent(sessionId, text),
   * replied(sessionId) (a reply ended), switched(summary) (another branch became current),
   * titled(sessionId, title) (a model wrote its title),
   * title() → the current session's title.
   */
  constructor(callbacks) {
    this.callbacks = callbacks;
    this.pageSize = PAGE_SIZE;
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
    this.branches = new Branches(this, { switched: (summary) => this.callbacks.switched(summary) });

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

  /**
   * Shows a session's newest messages; with `branchTo` (a message id), first makes the branch
   * through that message current. Throws SessionNotFound for an unknown id.
   */
  async open(sessionId, { branchTo = null } = {}) {
    this.reset(sessionId);
    this.emptyState.hidden = true;
    this.loading.hidden = false;
    this.setTitle(this.callbacks.title(sessionId) ?? '');
    const controller = new AbortController();
    this.loadController = controller;
    this.updateComposer();
    let detail;
    try {
      const path = `/sessions/${encodeURIComponent(sessionId)}`;
      detail = branchTo
        ? await request('PUT', `${path}/branch`, {
            query: { limit: PAGE_SIZE },
            body: { message_id: branchTo },
            signal: controller.signal,
          })
        : await request('GET', path, { query: { limit: PAGE_SIZE }, signal: controller.signal });
    } catch (error) {
      if (isAbort(error)) return;
      this.loading.hidden = true;
      if (error.status === 404 || error.status === 422) throw new SessionNotFound(error.message);
      this.showError(error.message, () => this.open(sessionId, { branchTo }));
      return;
    } finally {
      if (this.loadController === controller) {
        this.loadController = null;
        this.updateComposer();
      }
    }
    this.loading.hidden = true;
    this.render(detail);
    this.scrollToBottom();
    if (branchTo) this.callbacks.switched(detail);
    const last = detail.messages.at(-1);
    if (last?.role === 'assistant' && last.metadata?.status === 'generating') this.follow(last);
  }

  /** Follows a reply still being written when the session was opened: the rest shows live. */
  async follow(message) {
    const reply = this.itemOf(message.id);
    if (!reply || this.busy) return;
    reply.dataset.status = 'streaming';
    reply.setAttribute('aria-busy', 'true');
    this.fill(reply, message.content, null);
    const stream = this.newStream({
      reply,
      saved: true,
      following: true,
      text: message.content,
      replyId: message.id,
      // Offsets count characters (code points, as the spread does), not UTF-16 units.
      lastEventId: `${message.id}:${[...message.content].length}`,
      replySiblings: (message.sibling_ids ?? []).filter((id) => id !== message.id),
    });
    stream.again = () => this.open(stream.sessionId);
    await this.run(stream, (options) => resumeStream(stream.sessionId, stream.lastEventId, options));
  }

  /** Shows a session's detail (a page of its current branch) in place of what is shown. */
  render(detail) {
    // Older messages of the branch shown before must not be added to this one.
    this.olderController?.abort();
    this.olderController = null;
    this.historySentinel.classList.remove('is-loading');
    this.setTitle(detail.title);
    this.list.replaceChildren(...detail.messages.map((message) => this.messageElement(message)));
    this.emptyState.hidden = detail.messages.length > 0;
    this.setOlder(detail);
    this.olderObserver.unobserve(this.historySentinel);
    this.olderObserver.observe(this.historySentinel);
  }

  /**
   * Replaces the conversation by the session detail that `load(signal)` resolves to (another
   * branch), keeping `anchor`'s place on screen for the message `anchorId`. Nothing can be
   * sent meanwhile. Resolves whether it was shown.
   */
  async reload(load, { anchor = null, anchorId = null } = {}) {
    if (this.busy || !this.sessionId) return false;
    const controller = new AbortController();
    this.loadController = controller;
    this.updateComposer();
    const top = () => this.thread.getBoundingClientRect().top;
    const offset = anchor?.isConnected ? anchor.getBoundingClientRect().top - top() : null;
    try {
      const detail = await load(controller.signal);
      if (this.loadController !== controller) return false;
      this.clearError();
      this.render(detail);
      const kept = anchorId ? this.itemOf(anchorId) : null;
      if (kept && offset != null) this.thread.scrollTop += kept.getBoundingClientRect().top - top() - offset;
      else this.scrollToBottom();
      this.updateLatestButton();
      return true;
    } catch (error) {
      if (isAbort(error) || this.loadController !== controller) return false;
      this.showError(error.message, () => {
        this.clearError();
        this.reload(load, { anchor, anchorId });
      });
      return false;
    } finally {
      if (this.loadController === controller) {
        this.loadController = null;
        this.updateComposer();
      }
    }
  }

  /** The message element of the message `id`, if it is on screen. */
  itemOf(id) {
    return id ? this.list.querySelector(`li[data-message-id="${CSS.escape(id)}"]`) : null;
  }

  /** A reply streams or the conversation loads: nothing else may start. */
  get busy() {
    return Boolean((this.stream && !this.stream.ended) || this.loadController);
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

  messageElement(message) {
    const { role, content, metadata = {}, created_at: createdAt, feedback = null } = message;
    const status = metadata?.status ?? 'complete';
    const body = h('div', { class: 'message-body' });
    const item = h('li', {
      class: `message ${role}`,
      dataset: { role, status },
      title: createdAt ? formatDateTime(createdAt) : null,
    });
    item.append(body);
    item.feedback = feedback;
    if (role === 'assistant') item.prepend(h('div', { class: 'avatar', 'aria-hidden': 'true' }, icon('logo')));
    this.identify(item, message);
    this.fill(item, content, metadata?.finish_reason === 'stopped' ? 'stopped' : status);
    return item;
  }

  /** Records which stored message (`id`, `sibling_ids`, `content`) an element shows. */
  identify(item, message) {
    if (!message.id) return;
    item.dataset.messageId = message.id;
    this.branches.track(item, message);
  }

  /** Renders `text` into a message, with the note its status calls for and its actions. */
  fill(item, text, note) {
    const body = item.querySelector('.message-body');
    item.querySelector('.message-footer')?.remove();
    const footer = h('div', { class: 'message-footer' });
    if (!text && NOTES[note]) {
      body.replaceChildren(h('p', { class: `message-note ${note}` }, NOTES[note]));
    } else {
      renderMarkdown(body, text);
      if (NOTES[note]) footer.append(h('span', { class: `message-note ${note}` }, NOTES[note]));
    }
    // One toolbar per message, for every action on it.
    const actions = h('div', { class: 'message-actions' });
    if (item.dataset.role === 'assistant' && text) {
      actions.append(
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
      if (item.dataset.messageId && this.sessionId && item.dataset.status !== 'generating') {
        footer.append(feedbackControls(this.sessionId, item.dataset.messageId, item.feedback));
      }
    }
    this.branches.addActions(item, actions);
    if (actions.childElementCount) footer.append(actions);
    if (footer.childElementCount) body.after(footer);
  }

  // --- Sending ---------------------------------------------------------------------------

  submit() {
    const text = this.input.value;
    // While a session loads, what is sent now would be replaced by what arrives.
    if (!text.trim() || this.busy) return;
    this.input.value = '';
    this.send(text);
  }

  /**
   * Sends `text`. With `editOf` (a user message on screen: {item, id, siblingIds}) as an edit
   * of it: the new message takes its place and the conversation below it goes (it stays on
   * the old branch, a version away).
   */
  async send(text, { editOf = null, key = newIdempotencyKey() } = {}) {
    this.clearError();
    this.emptyState.hidden = true;
    this.lastMessage = text;
    const userItem = this.messageElement({ role: 'user', content: text });
    const reply = this.pendingReply();
    const body = { message: text };
    if (this.sessionId) body.session_id = this.sessionId;
    let restore = null;
    if (editOf) {
      body.edit_of = editOf.id;
      restore = this.replaceFrom(editOf.item, userItem, reply);
    } else {
      this.list.append(userItem, reply);
    }
    const stream = this.newStream({ message: text, userItem, userSiblings: editOf?.siblingIds ?? [], reply, restore });
    // Sent again only while no `session` event said it was saved: under the same key, so that
    // a message the server did store (its answer lost) is not stored twice.
    stream.again = () => {
      if (!editOf) {
        // One the server never got is taken off the screen first.
        if (!stream.saved) {
          stream.userItem.remove();
          stream.reply.remove();
          this.send(text, { key });
        } else {
          this.send(text);
        }
      } else if (!stream.saved) {
        this.send(text, { editOf, key }); // the edited message is back on screen
      } else {
        this.regenerateFailed(stream, () => this.send(text, { editOf: { ...editOf, item: stream.userItem } }));
      }
    };
    await this.run(stream, (options) => streamChat(body, key, options));
  }

  /** Regenerates the reply `target` (a reply on screen: {item, id, siblingIds}) in its place. */
  async regenerate(target, key = newIdempotencyKey()) {
    if (this.busy || !this.sessionId) return;
    this.clearError();
    const reply = this.pendingReply();
    const restore = this.replaceFrom(target.item, reply);
    const stream = this.newStream({ reply, replySiblings: target.siblingIds, restore });
    stream.again = () => {
      if (!stream.saved) this.regenerate(target, key);
      else this.regenerateFailed(stream, () => this.regenerate({ ...target, item: stream.reply }));
    };
    await this.run(stream, (options) => streamRegenerate(this.sessionId, target.id, key, options));
  }

  /** Retries a failed reply of an edit or a regeneration: regenerates it, once its id is known. */
  regenerateFailed(stream, otherwise) {
    const target = this.branches.target(stream.reply);
    if (target) this.regenerate(target);
    else otherwise();
  }

  pendingReply() {
    const reply = this.messageElement({ role: 'assistant', content: '', metadata: { status: 'streaming' } });
    reply.setAttribute('aria-busy', 'true');
    return reply;
  }

  /** Puts `items` in place of `item` and the messages after it; returns what puts them back. */
  replaceFrom(item, ...items) {
    const removed = [];
    for (let next = item; next; next = next.nextElementSibling) removed.push(next);
    item.before(...items);
    for (const old of removed) old.remove();
    return () => {
      if (items[0]?.isConnected) items[0].before(...removed);
      else this.list.append(...removed);
      for (const added of items) added.remove();
    };
  }

  newStream(fields) {
    return {
      controller: new AbortController(),
      sessionId: this.sessionId,
      saved: false, // the server has the user's message (or the regeneration)
      ended: false,
      stopped: false,
      text: '',
      frame: 0,
      message: null, // the text sent; none for a regeneration
      userItem: null,
      userSiblings: [],
      reply: null,
      replySiblings: [],
      replyId: null,
      lastEventId: null, // the `id` of the last event received: where a resumed stream starts
      following: false, // a reply that was being written when the session was opened
      restore: null, // puts back what an edit or a regeneration took off the screen
      again: null,
      ...fields,
    };
  }

  async run(stream, start) {
    this.stream = stream;
    this.updateComposer();
    this.scrollToBottom();
    try {
      await this.read(stream, start);
    } catch (error) {
      if (stream.stopped) this.finish(stream, 'incomplete', 'stopped');
      else if (stream.following && !isAbort(error) && !stream.ended) {
        // Not followed after all (an older server, say): the reply as it was when loaded.
        this.finish(stream, 'generating');
      } else if (!isAbort(error) && !stream.ended) {
        if (stream.saved) {
          this.finish(stream, stream.text ? 'incomplete' : 'failed');
        } else if (stream.restore) {
          // Refused (the message is gone, rate limited...): what was there comes back.
          stream.ended = true;
          stream.restore();
        } else {
          // Refused before anything was saved (invalid, rate limited...): no reply to show.
          stream.ended = true;
          stream.reply.remove();
          stream.userItem.dataset.status = 'failed';
          this.fill(stream.userItem, stream.message, 'unsent');
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

  /**
   * Reads the stream that `start` opens to its end. A stream cut by the network (or a server
   * error) is resumed from its last event, a few times; what was received stays.
   */
  async read(stream, start) {
    const options = { signal: stream.controller.signal, onEvent: (event) => this.onEvent(stream, event) };
    for (let attempt = 0; ; attempt += 1) {
      try {
        await start(options);
        if (!stream.ended) throw new ApiError('The connection was lost before the reply finished.');
        return;
      } catch (error) {
        const resumable = !error.status || error.status >= 500;
        if (isAbort(error) || stream.ended || stream.stopped || !stream.lastEventId || !resumable) throw error;
        if (attempt >= RESUME_DELAYS_MS.length) throw error;
        await pause(RESUME_DELAYS_MS[attempt], stream.controller.signal);
        start = (resumed) => resumeStream(stream.sessionId, stream.lastEventId, resumed);
      }
    }
  }

  onEvent(stream, { event, data, id }) {
    if (stream.ended) return;
    if (id) stream.lastEventId = id;
    switch (event) {
      case 'session':
        stream.saved = true;
        stream.sessionId = data.session_id;
        stream.replyId = data.message_id ?? null;
        if (this.stream === stream && this.sessionId !== data.session_id) {
          this.sessionId = data.session_id;
          this.callbacks.started(data.session_id);
        }
        if (stream.userItem) {
          const id = data.user_message_id;
          this.identify(stream.userItem, { id, content: stream.message, sibling_ids: [...stream.userSiblings, id] });
          if (!stream.ended) this.fill(stream.userItem, stream.message);
          this.callbacks.sent(data.session_id, stream.message);
        }
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
        stream.replyId = data.message_id;
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
    if (stream.replyId) {
      this.identify(stream.reply, { id: stream.replyId, sibling_ids: [...stream.replySiblings, stream.replyId] });
    } else if (stream.saved && (status === 'failed' || status === 'incomplete')) {
      this.identifyFailed(stream, note);
    }
    this.fill(stream.reply, stream.text, note);
    this.branches.setBusy(this.busy);
    if (stick) this.scrollToBottom();
  }

  /**
   * A failed reply is saved, but its `error` event does not name it: it is the last message
   * of the session's current branch. Once known, it has its versions and can be regenerated.
   */
  async identifyFailed(stream, note) {
    let page;
    try {
      page = await request('GET', `/sessions/${encodeURIComponent(stream.sessionId)}`, { query: { limit: 1 } });
    } catch {
      return; // a reload shows it
    }
    const last = page.messages.at(-1);
    if (last?.role !== 'assistant' || !stream.reply.isConnected || stream.sessionId !== this.sessionId) return;
    if (this.itemOf(last.id)) return;
    this.identify(stream.reply, last);
    this.fill(stream.reply, stream.text, note);
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

  /** Does again what failed: sends the message, the edit, or the regeneration. */
  retry(stream) {
    this.clearError();
    if (this.busy) return;
    stream.again();
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
    this.branches.setBusy(this.busy);
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

/** Resolves after `ms`, or rejects with an AbortError when `signal` aborts first. */
function pause(ms, signal) {
  return new Promise((resolve, reject) => {
    const abort = () => {
      clearTimeout(timer);
      reject(new DOMException('Aborted', 'AbortError'));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', abort);
      resolve();
    }, ms);
    if (signal.aborted) abort();
    else signal.addEventListener('abort', abort, { once: true });
  });
}
