// The folders in the sidebar: the user's tree (create, rename, delete; clicking one shows only
// its chats), and the line that says which folder or tag the list is filtered by.

import { request } from './api.js';
import { h, icon } from './dom.js';
import { askName, confirmFolderDelete } from './dialogs.js';
import { closeMenu, openMenu } from './menu.js';

export class Labels {
  /** sidebar: the Sidebar (its filter and folders); toast(message). */
  constructor({ sidebar, toast }) {
    this.sidebar = sidebar;
    this.toast = toast;
    this.tree = [];
    this.list = document.getElementById('folder-tree');
    this.filterLine = document.getElementById('label-filter');
    document.getElementById('new-folder').addEventListener('click', () => this.create());
  }

  async load() {
    try {
      this.tree = (await request('GET', '/folders')).folders;
    } catch {
      return; // signed out, or the server is away: the chats still list
    }
    const flat = [];
    const walk = (folders, depth) => {
      for (const folder of folders) {
        flat.push({ ...folder, depth });
        walk(folder.children, depth + 1);
      }
    };
    walk(this.tree, 0);
    this.sidebar.folders = flat;
    if (this.sidebar.filter.folder && this.sidebar.filter.folder !== 'none' && !flat.some((f) => f.folder_id === this.sidebar.filter.folder)) {
      this.sidebar.setFilter({ folder: null }); // the folder shown was deleted
    }
    this.render();
  }

  render() {
    const selected = this.sidebar.filter.folder;
    this.list.replaceChildren(
      ...this.sidebar.folders.map((folder) =>
        h(
          'li',
          { class: 'folder', dataset: { folderId: folder.folder_id } },
          h(
            'button',
            {
              type: 'button',
              class: 'folder-button',
              'aria-label': folder.name,
              title: `${folder.name}: ${folder.session_count} chat${folder.session_count === 1 ? '' : 's'}`,
              'aria-pressed': String(selected === folder.folder_id),
              onclick: () => this.sidebar.setFilter({ folder: selected === folder.folder_id ? null : folder.folder_id }),
            },
            h('span', { class: `folder-indent depth-${Math.min(folder.depth, 9)}` }),
            icon('folder'),
            h('span', { class: 'folder-name', dir: 'auto' }, folder.name),
            folder.session_count ? h('span', { class: 'folder-count' }, String(folder.session_count)) : null,
          ),
          h(
            'button',
            {
              type: 'button',
              class: 'session-actions folder-actions',
              'aria-label': `Actions for folder ${folder.name}`,
              'aria-haspopup': 'menu',
              'aria-expanded': 'false',
              onclick: (event) => this.openActions(folder, event.currentTarget),
            },
            icon('dots'),
          ),
        ),
      ),
    );
    this.renderFilter();
  }

  /** "Showing: <folder> · tag <name>", with a button that shows all chats again. */
  renderFilter() {
    const { folder, tag } = this.sidebar.filter;
    const parts = [];
    if (folder) parts.push(folder === 'none' ? 'chats in no folder' : `folder ${this.sidebar.folders.find((f) => f.folder_id === folder)?.name ?? ''}`);
    if (tag) parts.push(`tag ${tag}`);
    this.filterLine.hidden = !parts.length;
    this.filterLine.replaceChildren(
      h('span', {}, `Showing ${parts.join(', ')}`),
      h('button', { type: 'button', class: 'link-button', onclick: () => this.sidebar.setFilter({ folder: null, tag: null }) }, 'Show all'),
    );
  }

  openActions(folder, anchor) {
    openMenu(
      anchor,
      [
        { label: 'New subfolder', icon: 'new', action: () => this.create(folder) },
        { label: 'Rename', icon: 'edit', action: () => this.rename(folder) },
        { label: 'Delete', icon: 'trash', danger: true, action: () => this.remove(folder) },
      ],
      { label: `Actions for folder ${folder.name}` },
    );
  }

  async create(parent = null) {
    closeMenu({ restoreFocus: false });
    await askName({
      title: parent ? `New folder in ${parent.name}` : 'New folder',
      submitLabel: 'Create',
      save: (name) => this.change('POST', '/folders', { body: { name, parent_id: parent?.folder_id ?? null } }),
    });
  }

  async rename(folder) {
    closeMenu({ restoreFocus: false });
    await askName({
      title: `Rename folder ${folder.name}`,
      value: folder.name,
      submitLabel: 'Rename',
      save: (name) => (name === folder.name ? null : this.change('PATCH', `/folders/${folder.folder_id}`, { body: { name } })),
    });
  }

  async remove(folder) {
    closeMenu({ restoreFocus: false });
    const answer = await confirmFolderDelete(folder);
    if (!answer) return;
    const query = answer.deleteSessions ? { delete_sessions: 'true' } : undefined;
    // The chat open now goes with the folder if it was filed there (read before the list reloads).
    const open = this.sidebar.find(this.sidebar.currentId);
    const failure = await this.change('DELETE', `/folders/${folder.folder_id}`, { query });
    if (failure) {
      this.toast(failure);
      return;
    }
    if (answer.deleteSessions && open?.folder_id === folder.folder_id) this.sidebar.callbacks.deleted(open.session_id);
    this.sidebar.reset(); // its chats moved or went
  }

  /** Sends the change and reloads the folders; resolves to the error's message, or null. */
  async change(method, path, options) {
    try {
      await request(method, path, options);
    } catch (error) {
      return error.message;
    }
    await this.load();
    return null;
  }
}
