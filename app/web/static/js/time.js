// Sidebar groups by the day of a session's last activity, in the browser's time zone.

export const GROUPS = ['Pinned', 'Today', 'Yesterday', 'Previous 7 days', 'Older'];

const startOfDay = (date) => new Date(date.getFullYear(), date.getMonth(), date.getDate());

/** The group a session is listed under. */
export function groupOf(session, now = new Date()) {
  if (session.pinned) return 'Pinned';
  // Rounded: a day with a daylight-saving change is 23 or 25 hours long.
  const days = Math.round((startOfDay(now) - startOfDay(new Date(session.updated_at))) / 86_400_000);
  if (days <= 0) return 'Today'; // or later: a clock a little ahead of this one
  if (days === 1) return 'Yesterday';
  if (days <= 7) return 'Previous 7 days';
  return 'Older';
}

const FULL = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/** A timestamp as the reader's locale writes it, e.g. for tooltips. */
export const formatDateTime = (iso) => FULL.format(new Date(iso));
