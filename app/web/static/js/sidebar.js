// The chat history: grouped sessions, infinite scroll over cursor pages, search as you type,
// archived view, a folder or tag filter (js/labels.js shows the folders), and each session's
// actions (rename, share, pin, move to a folder, tags, archive, delete).
//
// Every list is a Map keyed by session_id, so a session is never shown twice: pages, the
// refreshed first page and local updates all merge into it.

import { isAbort, request } from './api.js';
import { confirmDelete, editTags, openShareDialog } from './dialogs.js';
import { h, highlighted, icon } from './dom.js';
import { closeMenu, openMenu, reanchorMenu } from './menu.js';
import { GROUPS, formatDateTime, groupOf } from './time.js';

const PAGE_SIZE = 30;
const SEARCH_DELAY_MS = 250;

/** One listing: the sessions loaded so far and where the next page starts. */
function listing({ archived, query = null, folder = null, tag = null }) {
  return {
    archived,
    query,
    folder, // a folder's id, "none", or null: any
    tag, // a tag's name, or null: any
    items: new Map(),
    cursor: null,
    hasMore: true,
    loaded: false,
    error: null,
    controller: null,
  };
}

const byActivity = (a, b) =>
  Number(b.pinned) - Number(a.pinned) || Date.parse(b.updated_at) - Date.parse(a.updated_at);

export class Sidebar {
  /**
   * callbacks: open(sessionId, {branchTo}), deleted(sessionId), changed(summary) (a session's title or
   * state changed here), signIn() (asks for a token), toast(message).
   */
  constructor(callbacks) {
    this.callbacks = callbacks;
    this.archived = false;
    this.lists = { active: listing({ archived: false }), archived: listing({ archived: true }) };
    this.search = null;
    this.filter = { folder: null, tag: null };
    // The user's folders, flat and in tree order ({folder_id, name, depth}): set by js/labels.js.
    this.folders = [];
    this.currentId = null;
    this.renaming = null;
    this.renderPending = false;
    this.searchTimer = 0;

    this.scroller = document.getElementById('session-scroll');
    this.groups = document.getElementById('session-groups');
    this.status = document.getElementById('sidebar-status');
    this.errorBox = document.getElementById('sidebar-error');
    this.sentinel = document.getElementById('sidebar-sentinel');
    this.searchInput = document.getElementById('search');
    this.archivedToggle = document.getElementById('archived-toggle');

    this.searchInput.addEventListener('input', () => {
      clearTimeout(this.searchTimer);
      this.searchTimer = setTimeout(() => this.setQuery(this.searchInput.value), SEARCH_DELAY_MS);
    });
    this.searchInput.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && this.searchInput.value) {
        event.stopPropagation();
        this.searchInput.value = '';
        this.setQuery('');
      }
    });
    this.archivedToggle.addEventListener('click', () => this.toggleArchived());
    this.scroller.addEventListener('scroll', () => closeMenu({ restoreFocus: false }), { passive: true });
    // Loads the next page when the end of the list comes near.
    this.observer = new IntersectionObserver(
      (entries) => {
        if (entries.some((entry) => entry.isIntersecting)) this.loadMore();
      },
      { root: this.scroller, rootMargin: '0px 0px 240px 0px' },
    );
    this.observer.observe(this.sentinel);
  }

  /** The listing on screen: search results, archived sessions, or the others. */
  get view() {
    return this.search ?? (this.archived ? this.lists.archived : this.lists.active);
  }

  /** Forgets everything loaded and starts over (after signing in). */
  reset() {
    for (const list of [this.lists.active, this.lists.archived, this.search]) list?.controller?.abort();
    this.lists = {
      active: listing({ archived: false, ...this.filter }),
      archived: listing({ archived: true, ...this.filter }),
    };
    if (this.search) this.search = listing({ archived: this.archived, query: this.search.query, ...this.filter });
    this.render();
    this.rearm();
  }

  /** Shows only one folder's sessions (`folder`: an id, or "none") and/or one tag's; null
   * for either: any. Starts the listings over (a cursor works only with its own filters). */
  setFilter(filter) {
    this.filter = { ...this.filter, ...filter };
    this.scroller.scrollTop = 0;
    this.reset();
    this.callbacks.filtered?.(this.filter);
  }

  /** Whether a session belongs in a listing with these filters. */
  static matches(list, session) {
    if (list.folder && (session.folder_id ?? 'none') !== list.folder) return false;
    if (list.tag && !(session.tags ?? []).some((tag) => tag.toLowerCase() === list.tag.toLowerCase())) return false;
    return true;
  }

  find(sessionId) {
    return this.lists.active.items.get(sessionId) ?? this.lists.archived.items.get(sessionId) ?? this.search?.items.get(sessionId);
  }

  async loadMore() {
    const view = this.view;
    if (view.controller || !view.hasMore || view.error) return;
    const controller = new AbortController();
    view.controller = controller;
    this.renderStatus();
    try {
      const page = await request('GET', '/sessions', {
        query: {
          limit: PAGE_SIZE,
          include_total: false,
          archived: view.archived || null, // the default; left out of the URL
          q: view.query,
          folder_id: view.folder,
          tag: view.tag,
          cursor: view.cursor,
        },
        signal: controller.signal,
      });
      for (const session of page.sessions) this.merge(view, session);
      view.cursor = page.next_cursor;
      view.hasMore = Boolean(page.has_more && page.next_cursor);
      view.loaded = true;
    } catch (error) {
      if (isAbort(error)) return;
      view.error = error;
    } finally {
      if (view.controller === controller) view.controller = null;
    }
    if (view !== this.view) return;
    this.render();
    this.rearm();
  }

  /** Re-reads the first page (after a message was sent) and merges it in: new titles,
   * previews and order, without losing the pages scrolled through so far. */
  async refreshTop() {
    const list = this.archived ? this.lists.archived : this.lists.active;
    if (!list.loaded) return;
    try {
      const page = await request('GET', '/sessions', {
        query: {
          limit: PAGE_SIZE,
          include_total: false,
          archived: list.archived || null,
          folder_id: list.folder,
          tag: list.tag,
        },
      });
      for (const session of page.sessions) this.merge(list, session);
    } catch {
      return; // the local update stays; the next refresh corrects it
    }
    this.render();
  }

  /** Adds or updates a session in a listing; the later activity wins. */
  merge(list, session) {
    const known = list.items.get(session.session_id);
    if (known && !list.query && Date.parse(known.updated_at) > Date.parse(session.updated_at)) {
      list.items.set(session.session_id, { ...session, updated_at: known.updated_at });
      return;
    }
    list.items.set(session.session_id, known && list.query ? { ...known, ...session } : session);
  }

  /**
   * A session changed (a reply, a rename, archiving...): put it in the listings it now
   * belongs to and take it out of the others. Search results are only updated, never added to.
   */
  apply(session) {
    for (const list of [this.lists.active, this.lists.archived, this.search]) {
      if (!list) continue;
      if (list.archived !== session.archived || !Sidebar.matches(list, session)) list.items.delete(session.session_id);
      else if (!list.query) this.merge(list, session);
      else if (list.items.has(session.session_id)) this.merge(list, { ...session, snippet: list.items.get(session.session_id).snippet });
    }
    this.render();
  }

  /** A message was just sent in `sessionId`: it moves to the top at once. */
  touch(sessionId, message) {
    const known = this.find(sessionId);
    const preview = visibleText(message);
    this.apply({
      session_id: sessionId,
      title: known?.title ?? (shorten(preview, 50) || 'New chat'),
      last_message: shorten(preview, 100),
      message_count: (known?.message_count ?? 0) + 1,
      created_at: known?.created_at ?? new Date().toISOString(),
      updated_at: new Date().toISOString(),
      pinned: known?.pinned ?? false,
      archived: known?.archived ?? false,
      folder_id: known?.folder_id ?? null,
      tags: known?.tags ?? [],
    });
  }

  remove(sessionId) {
    for (const list of [this.lists.active, this.lists.archived, this.search]) list?.items.delete(sessionId);
    this.render();
  }

  setCurrent(sessionId) {
    this.currentId = sessionId;
    for (const link of this.groups.querySelectorAll('a[aria-current]')) link.removeAttribute('aria-current');
    this.linkOf(sessionId)?.setAttribute('aria-current', 'page');
  }

  toggleArchived() {
    this.archived = !this.archived;
    this.archivedToggle.setAttribute('aria-pressed', String(this.archived));
    if (this.search) this.startSearch(this.search.query);
    this.scroller.scrollTop = 0;
    this.render();
    this.rearm();
  }

  setQuery(text) {
    const query = text.trim();
    if (query === (this.search?.query ?? '')) return;
    if (query) {
      this.startSearch(query);
    } else {
      this.search?.controller?.abort();
      this.search = null;
    }
    this.scroller.scrollTop = 0;
    this.render();
    this.rearm();
  }

  startSearch(query) {
    // A slower answer to an older query must not replace a newer one: abort it.
    this.search?.controller?.abort();
    this.search = listing({ archived: this.archived, query, ...this.filter });
  }

  /** Makes the observer report the sentinel again: if it is still in view, the next page loads. */
  rearm() {
    this.observer.unobserve(this.sentinel);
    this.observer.observe(this.sentinel);
  }

  // --- Rendering -------------------------------------------------------------------------

  render() {
    if (this.renaming) {
      this.renderPending = true; // rebuilding now would throw the title input away
      return;
    }
    const view = this.view;
    const focused = this.focusedControl();
    const sessions = [...view.items.values()];
    let groups;
    if (view.query) {
      groups = sessions.length ? [['Results', sessions]] : [];
    } else {
      const now = new Date();
      const byGroup = new Map(GROUPS.map((name) => [name, []]));
      for (const session of sessions.sort(byActivity)) byGroup.get(groupOf(session, now)).push(session);
      groups = [...byGroup].filter(([, members]) => members.length);
    }
    const words = view.query ? view.query.split(/\s+/) : [];
    this.groups.replaceChildren(
      ...groups.map(([name, members], index) =>
        h(
          'section',
          { class: 'group', 'aria-labelledby': `group-${index}` },
          h('h2', { id: `group-${index}`, class: 'group-title' }, name),
          h('ul', { class: 'sessions' }, members.map((session) => this.entry(session, words))),
        ),
      ),
    );
    this.renderStatus();
    this.restoreFocus(focused);
    reanchorMenu((old) => this.actionsOf(old.closest('li')?.dataset.sessionId));
  }

  renderStatus() {
    const view = this.view;
    const empty = view.items.size === 0;
    let text = '';
    if (view.loaded && empty && !view.hasMore) {
      text = view.query ? 'No results' : view.archived ? 'No archived chats' : 'No chats yet';
    }
    this.status.textContent = text;
    this.status.hidden = !text;
    this.sentinel.classList.toggle('is-loading', Boolean(view.controller));
    this.errorBox.hidden = !view.error;
    if (view.error?.status === 401) {
      this.errorBox.replaceChildren(
        h('span', {}, 'Sign in to see your chats.'),
        h('button', { type: 'button', class: 'link-button', onclick: () => this.callbacks.signIn() }, 'Enter access token'),
      );
    } else if (view.error) {
      this.errorBox.replaceChildren(
        h('span', {}, `Couldn't load chats. ${view.error.message}`),
        h('button', { type: 'button', class: 'link-button', onclick: () => this.retry() }, 'Try again'),
      );
    }
  }

  retry() {
    this.view.error = null;
    this.renderStatus();
    this.loadMore();
  }

  entry(session, words) {
    const id = session.session_id;
    const snippetId = `snippet-${id}`;
    const link = h(
      'a',
      {
        href: `/?session=${encodeURIComponent(id)}`,
        class: 'session-link',
        'aria-current': id === this.currentId ? 'page' : null,
        'aria-describedby': session.snippet ? snippetId : null,
        title: `${session.title}\n${formatDateTime(session.updated_at)}`,
        onclick: (event) => {
          if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
          event.preventDefault();
          // A search result whose best match is on another version of the conversation opens
          // on that version (PUT …/branch), so the match is on screen.
          this.callbacks.open(id, session.match_off_branch ? { branchTo: session.match_message_id } : {});
        },
      },
      // dir="auto": a right-to-left title is laid out on its own, never reordering its neighbours.
      h('span', { class: 'session-title', dir: 'auto' }, highlighted(session.title, words)),
      session.snippet ? h('span', { class: 'session-snippet', id: snippetId, dir: 'auto' }, highlighted(session.snippet, words)) : null,
      session.match_off_branch ? h('span', { class: 'session-other-version' }, 'In another version') : null,
    );
    const actions = h(
      'button',
      {
        type: 'button',
        class: 'session-actions',
        'aria-label': `Actions for ${session.title}`,
        'aria-haspopup': 'menu',
        'aria-expanded': 'false',
        onclick: (event) => this.openActions(id, event.currentTarget),
      },
      icon('dots'),
    );
    // Each tag filters the list by it.
    const tags = session.tags?.length
      ? h(
          'div',
          { class: 'session-tags' },
          session.tags.map((tag) =>
            h(
              'button',
              {
                type: 'button',
                class: 'tag-chip',
                'aria-label': `Show chats tagged ${tag}`,
                'aria-pressed': String(this.filter.tag?.toLowerCase() === tag.toLowerCase()),
                onclick: () => this.setFilter({ tag }),
              },
              tag,
            ),
          ),
        )
      : null;
    return h(
      'li',
      { class: session.snippet ? 'session has-snippet' : 'session', dataset: { sessionId: id } },
      link,
      actions,
      tags,
    );
  }

  entryOf(sessionId) {
    if (!sessionId) return null;
    return this.groups.querySelector(`li[data-session-id="${CSS.escape(sessionId)}"]`);
  }

  linkOf(sessionId) {
    return this.entryOf(sessionId)?.querySelector('.session-link') ?? null;
  }

  actionsOf(sessionId) {
    return this.entryOf(sessionId)?.querySelector('.session-actions') ?? null;
  }

  /** Which session control has focus, so that a re-render can give it back. */
  focusedControl() {
    const active = document.activeElement;
    if (!this.groups.contains(active)) return null;
    return { id: active.closest('li')?.dataset.sessionId, actions: active.classList.contains('session-actions') };
  }

  restoreFocus(focused) {
    if (!focused) return;
    (focused.actions ? this.actionsOf(focused.id) : this.linkOf(focused.id))?.focus();
  }

  // --- Actions ---------------------------------------------------------------------------

  openActions(sessionId, anchor) {
    const session = this.find(sessionId);
    if (!session) return;
    openMenu(
      anchor,
      [
        { label: 'Rename', icon: 'edit', action: () => this.rename(sessionId) },
        { label: 'Share', icon: 'share', action: () => openShareDialog(session) },
        { label: 'Move to folder', icon: 'folder', action: () => this.chooseFolder(sessionId, anchor) },
        { label: 'Edit tags', icon: 'tag', action: () => this.editTags(sessionId) },
        session.pinned
          ? { label: 'Unpin', icon: 'unpin', action: () => this.update(sessionId, { pinned: false }) }
          : { label: 'Pin', icon: 'pin', action: () => this.update(sessionId, { pinned: true }) },
        session.archived
          ? { label: 'Unarchive', icon: 'unarchive', action: () => this.update(sessionId, { archived: false }, 'Chat restored') }
          : { label: 'Archive', icon: 'archive', action: () => this.update(sessionId, { archived: true }, 'Chat archived') },
        { label: 'Delete', icon: 'trash', danger: true, action: () => this.delete(sessionId) },
      ],
      { label: `Actions for ${session.title}` },
    );
  }

  /** A second menu at the same button: the folders (indented by depth), and "No folder". */
  chooseFolder(sessionId, anchor) {
    const session = this.find(sessionId);
    if (!session) return;
    const items = this.folders.map((folder) => ({
      label: `${'\u2003'.repeat(folder.depth)}${folder.name}`,
      icon: folder.folder_id === session.folder_id ? 'check' : 'folder',
      action: () => this.update(sessionId, { folder_id: folder.folder_id }, `Moved to ${folder.name}`),
    }));
    items.push({ label: 'No folder', icon: 'close', action: () => this.update(sessionId, { folder_id: null }, 'Taken out of its folder') });
    openMenu(anchor, items, { label: `Move ${session.title} to` });
  }

  /** The tags dialog: the session's tags as chips, the user's other tags suggested. */
  async editTags(sessionId) {
    const session = this.find(sessionId);
    if (!session) return;
    closeMenu({ restoreFocus: false });
    let known = [];
    try {
      known = (await request('GET', '/tags')).tags.map((tag) => tag.name);
    } catch {
      // no suggestions: the dialog still edits
    }
    await editTags({
      title: session.title,
      tags: session.tags ?? [],
      known,
      save: async (tags) => {
        try {
          await this.update(sessionId, { tags }, null, { quiet: true });
          return null;
        } catch (error) {
          return error.message;
        }
      },
    });
  }

  /** Saves `changes` to the session; errors go to a toast, or to the caller with `quiet`. */
  async update(sessionId, changes, done, { quiet = false } = {}) {
    try {
      const session = await request('PATCH', `/sessions/${encodeURIComponent(sessionId)}`, { body: changes });
      this.apply(session);
      this.callbacks.changed(session);
      if ('folder_id' in changes || 'tags' in changes) this.callbacks.labelsChanged?.();
      if (done) this.callbacks.toast(done);
    } catch (error) {
      if (quiet) throw error;
      this.callbacks.toast(error.message);
    }
  }


  /** Edits the title in place: Enter (or leaving the field) saves, Escape cancels. */
  rename(sessionId) {
    const entry = this.entryOf(sessionId);
    const session = this.find(sessionId);
    if (!entry || !session) return;
    const link = entry.querySelector('.session-link');
    const input = h('input', {
      type: 'text',
      class: 'rename-input',
      'aria-label': 'Title',
      maxlength: 200,
      value: session.title,
    });
    let finished = false;
    const finish = async (save) => {
      if (finished) return;
      finished = true;
      const title = input.value.replace(/\s+/g, ' ').trim();
      input.remove();
      link.hidden = false;
      entry.classList.remove('is-renaming');
      this.renaming = null;
      const changed = save && title && title !== session.title;
      if (changed) this.apply({ ...session, title }); // at once; the answer confirms it
      else if (this.renderPending) this.render();
      this.renderPending = false;
      this.linkOf(sessionId)?.focus();
      if (!changed) return;
      try {
        const updated = await request('PATCH', `/sessions/${encodeURIComponent(sessionId)}`, { body: { title } });
        this.apply(updated);
        this.callbacks.changed(updated);
      } catch (error) {
        this.apply(session);
        this.callbacks.toast(error.message);
      }
    };
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') {
        event.preventDefault();
        finish(true);
      } else if (event.key === 'Escape') {
        event.preventDefault();
        event.stopPropagation();
        finish(false);
      }
    });
    input.addEventListener('blur', () => finish(true));
    this.renaming = sessionId;
    entry.classList.add('is-renaming');
    link.hidden = true;
    entry.prepend(input);
    input.focus();
    input.select();
  }

  async delete(sessionId) {
    const session = this.find(sessionId);
    if (!session || !(await confirmDelete(session.title))) return;
    const next = this.entryOf(sessionId)?.nextElementSibling?.dataset.sessionId;
    try {
      await request('DELETE', `/sessions/${encodeURIComponent(sessionId)}`);
    } catch (error) {
      if (error.status !== 404) {
        this.callbacks.toast(error.message);
        return;
      }
    }
    this.remove(sessionId);
    this.callbacks.deleted(sessionId);
    this.callbacks.toast('Chat deleted');
    // Focus stays in the list: on the entry that took the deleted one's place.
    (this.linkOf(next) ?? document.getElementById('new-chat')).focus();
  }
}

/** The text as a one-line label shows it until the server's own label arrives: format and
 * bidi control characters left out (app/kit/text.py has the full rule), spaces collapsed. */
function visibleText(text) {
  return text.replace(/\p{Cf}+/gu, '').replace(/\s+/g, ' ').trim();
}

/** Cuts `text` to `max` characters with "...", never inside a grapheme cluster. */
function shorten(text, max) {
  const graphemes = [...new Intl.Segmenter().segment(text)].map((part) => part.segment);
  if ([...text].length <= max) return text;
  let kept = '';
  for (const grapheme of graphemes) {
    if ([...kept].length + [...grapheme].length > max - 3) break;
    kept += grapheme;
  }
  return `${kept}...`;
}
