// Modal dialogs from index.html (native <dialog>: focus is trapped inside, Escape cancels,
// and focus returns to where it was when they close).

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
