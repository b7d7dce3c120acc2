// Wires the page together: the URL (`/?session=<id>`), the sidebar, the conversation, the
// narrow-screen drawer, sign-in and notifications.

import { onUnauthorized } from './api.js';
import { forgetToken, hasHostTokens, hasStoredToken, storeToken, takeTokenFromFragment } from './auth.js';
import { Chat, SessionNotFound } from './chat.js';
import { createSignIn } from './dialogs.js';
import { Importer } from './imports.js';
import { Labels } from './labels.js';
import { Sidebar } from './sidebar.js';

const $ = (id) => document.getElementById(id);
const narrow = window.matchMedia('(max-width: 767.98px)');
const finePointer = window.matchMedia('(pointer: fine)');

takeTokenFromFragment();

// --- Notifications -----------------------------------------------------------------------

const toastEl = $('toast');
let toastTimer = 0;
function toast(message) {
  toastEl.textContent = message;
  toastEl.classList.add('is-visible');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => toastEl.classList.remove('is-visible'), 4000);
}

// --- Sidebar and conversation ------------------------------------------------------------

const sidebar = new Sidebar({
  open: (sessionId, { branchTo = null } = {}) => navigate(sessionId, { branchTo }),
  deleted: (sessionId) => {
    if (sessionId !== chat.sessionId) return;
    history.replaceState(null, '', urlOf(null));
    show(null, { focus: false });
  },
  changed: (session) => {
    if (session.session_id === chat.sessionId) chat.setTitle(session.title);
  },
  signIn: () => signIn.open(),
  toast,
  filtered: () => labels.render(),
  labelsChanged: () => labels.load(),
});
// The sidebar's folders (the sidebar's callbacks above only run once this is set).
const labels = new Labels({ sidebar, toast });
labels.load();
// The Import button: uploads an export, shows its progress, then refreshes the sidebar.
new Importer({ finished: () => { sidebar.reset(); labels.load(); }, toast });

const chat = new Chat({
  started: (sessionId) => {
    // The new chat now has an id: put it in the URL (replacing "/", so Back leaves the chat).
    history.replaceState(null, '', urlOf(sessionId));
    sidebar.setCurrent(sessionId);
  },
  sent: (sessionId, text) => {
    sidebar.touch(sessionId, text);
    syncTitle(sessionId);
  },
  replied: async (sessionId) => {
    await sidebar.refreshTop();
    syncTitle(sessionId);
  },
  switched: (summary) => sidebar.apply(summary),
  titled: (sessionId, title) => {
    const session = sidebar.find(sessionId);
    if (session) sidebar.apply({ ...session, title, title_source: 'model' });
    syncTitle(sessionId);
  },
  title: (sessionId) => sidebar.find(sessionId)?.title,
});

function syncTitle(sessionId) {
  const session = sidebar.find(sessionId);
  if (session && sessionId === chat.sessionId) chat.setTitle(session.title);
}

// --- Navigation --------------------------------------------------------------------------

const urlOf = (sessionId) => (sessionId ? `/?session=${encodeURIComponent(sessionId)}` : '/');
const sessionInUrl = () => new URLSearchParams(location.search).get('session') || null;

function navigate(sessionId, { replace = false, focus = true, branchTo = null } = {}) {
  if (narrow.matches) setDrawer(false);
  if (sessionId && sessionId === chat.sessionId && !chat.errorBox.childElementCount && !branchTo) {
    if (focus) focusComposer();
    return; // already open (and perhaps streaming): nothing to reload
  }
  if (sessionId !== sessionInUrl()) history[replace ? 'replaceState' : 'pushState'](null, '', urlOf(sessionId));
  show(sessionId, { focus, branchTo });
}

async function show(sessionId, { focus = true, branchTo = null } = {}) {
  sidebar.setCurrent(sessionId);
  if (!sessionId) {
    chat.newChat();
    if (focus) focusComposer();
    return;
  }
  try {
    await chat.open(sessionId, { branchTo });
  } catch (error) {
    if (!(error instanceof SessionNotFound)) throw error;
    history.replaceState(null, '', urlOf(null));
    sidebar.setCurrent(null);
    chat.newChat();
    toast('That chat does not exist, or it was deleted.');
  }
  if (focus) focusComposer();
}

function focusComposer() {
  // On touch screens focusing the field would pop the keyboard up over the conversation.
  if (finePointer.matches) chat.focusComposer();
}

window.addEventListener('popstate', () => show(sessionInUrl()));
$('new-chat').addEventListener('click', () => navigate(null));

// --- Narrow screens: the sidebar as a drawer ---------------------------------------------

const showButton = $('show-sidebar');

function setDrawer(open) {
  const wasOpen = document.body.classList.contains('sidebar-open');
  document.body.classList.toggle('sidebar-open', open);
  showButton.setAttribute('aria-expanded', String(open));
  // The conversation behind the open drawer is out of reach, for pointer and keyboard alike.
  $('main').inert = open;
  if (open && !wasOpen) $('new-chat').focus();
  if (!open && wasOpen && $('sidebar').contains(document.activeElement)) showButton.focus();
}

showButton.addEventListener('click', () => setDrawer(!document.body.classList.contains('sidebar-open')));
$('hide-sidebar').addEventListener('click', () => setDrawer(false));
$('sidebar-backdrop').addEventListener('click', () => setDrawer(false));
narrow.addEventListener('change', () => setDrawer(false));
document.addEventListener('keydown', (event) => {
  // Menus, dialogs and the title field handle their own Escape first.
  if (
    event.key === 'Escape' &&
    !event.defaultPrevented &&
    !document.querySelector('dialog[open]') &&
    document.body.classList.contains('sidebar-open')
  ) {
    setDrawer(false);
  }
});

// --- Authentication ----------------------------------------------------------------------

const signOutButton = $('sign-out');
const updateSignOut = () => {
  signOutButton.hidden = !hasStoredToken() || hasHostTokens();
};

const signIn = createSignIn({
  onToken: (token) => {
    storeToken(token);
    updateSignOut();
    sidebar.reset();
    labels.load();
    show(sessionInUrl());
  },
});

onUnauthorized(() => {
  if (signIn.isOpen) return;
  if (hasHostTokens()) {
    toast('Your sign-in has expired. Sign in again, then reload this page.');
    return;
  }
  const refused = hasStoredToken();
  forgetToken();
  updateSignOut();
  signIn.open(refused ? 'That token was not accepted, or it has expired. Paste a new one.' : null);
});

signOutButton.addEventListener('click', () => {
  forgetToken();
  location.assign('/');
});

// --- Start -------------------------------------------------------------------------------

updateSignOut();
show(sessionInUrl());
