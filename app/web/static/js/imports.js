// The Import button: uploads a ChatGPT export or this service's own (POST /import answers 202
// at once), then follows the import (GET /imports/{id}) with a progress bar until it ends.

import { request } from './api.js';

const $ = (id) => document.getElementById(id);
const POLL_MS = 500;

export class Importer {
  constructor({ finished, toast }) {
    this.finished = finished;
    this.toast = toast;
    this.button = $('import-button');
    this.input = $('import-file');
    this.panel = $('import-progress');
    this.bar = $('import-bar');
    this.status = $('import-status');
    this.button.addEventListener('click', () => this.input.click());
    this.input.addEventListener('change', () => {
      const [file] = this.input.files;
      this.input.value = '';
      if (file) this.run(file);
    });
  }

  async run(file) {
    this.button.disabled = true;
    this.panel.hidden = false;
    this.bar.removeAttribute('value'); // indeterminate while the file uploads
    this.status.textContent = `Uploading ${file.name}…`;
    try {
      const form = new FormData();
      form.append('file', file);
      let state = await request('POST', '/import', { form });
      while (state.status === 'running') {
        this.show(state);
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
        state = await request('GET', `/imports/${state.import_id}`);
      }
      this.show(state);
      this.finished();
    } catch (error) {
      this.status.textContent = `Import failed: ${error.message}`;
      this.toast(`Import failed: ${error.message}`);
    } finally {
      this.button.disabled = false;
    }
  }

  show(state) {
    if (state.total != null) {
      this.bar.max = Math.max(state.total, 1);
      this.bar.value = state.total ? state.done : 1;
    }
    this.status.textContent = describe(state);
  }
}

function describe(state) {
  const failed = state.done - state.imported - state.skipped;
  if (state.status === 'running') {
    return state.total == null ? 'Reading the file…' : `Importing: ${state.done} of ${state.total} chats`;
  }
  const parts = [`${state.imported} imported`];
  if (state.skipped) parts.push(`${state.skipped} already there`);
  if (failed) {
    const first = state.failed[0];
    parts.push(`${failed} failed${first ? ` (${first.title}: ${first.reason})` : ''}`);
  }
  const summary = parts.join(', ');
  return state.status === 'failed' ? `Import stopped: ${state.error} (${summary})` : `Import done: ${summary}.`;
}
