// Where the bearer token comes from, in this order:
// 1. `window.chatConfig.getToken()`, set by a host page (or by a same-origin page that embeds
//    this one in an iframe), asked before every request so it can refresh tokens;
// 2. a token handed over once in the URL fragment (`#token=...`);
// 3. a token pasted into the sign-in dialog.
// 2 and 3 are kept in localStorage under `chat.token`. In open mode there is none, and none
// is needed.

const STORAGE_KEY = 'chat.token';
let memoryToken = null; // when localStorage is unavailable (private modes, policies)

function hostConfig() {
  if (window.chatConfig) return window.chatConfig;
  try {
    if (window.parent !== window && window.parent.chatConfig) return window.parent.chatConfig;
  } catch {
    // A cross-origin parent: nothing to read.
  }
  return null;
}

export function hasHostTokens() {
  return typeof hostConfig()?.getToken === 'function';
}

function readStored() {
  try {
    return localStorage.getItem(STORAGE_KEY) ?? memoryToken;
  } catch {
    return memoryToken;
  }
}

export function storeToken(token) {
  memoryToken = token;
  try {
    localStorage.setItem(STORAGE_KEY, token);
  } catch {
    // Kept in memory for this page only.
  }
}

export function forgetToken() {
  memoryToken = null;
  try {
    localStorage.removeItem(STORAGE_KEY);
  } catch {
    // Nothing stored.
  }
}

export function hasStoredToken() {
  return Boolean(readStored());
}

/** Moves a `#token=...` fragment into storage and out of the address bar and history. */
export function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('token');
  if (!token) return;
  storeToken(token);
  params.delete('token');
  const rest = params.toString();
  history.replaceState(history.state, '', `${location.pathname}${location.search}${rest ? `#${rest}` : ''}`);
}

/** The token to send, or null. */
export async function getToken() {
  const config = hostConfig();
  if (typeof config?.getToken === 'function') {
    const token = await config.getToken();
    if (token) return token;
  }
  return readStored();
}
