// The actions menu of a sidebar entry: one popup at a time, placed next to its button, with
// the keyboard behaviour of a menu button (arrows, Home/End, Escape, Tab).

import { h, icon } from './dom.js';

let current = null; // { element, anchor, onOutside }

/**
 * Opens a menu under `anchor` (a button with aria-haspopup="menu"). Items: {label, icon,
 * danger?, action}. The action runs after the menu has closed and focus is back on `anchor`.
 */
export function openMenu(anchor, items, { label } = {}) {
  closeMenu({ restoreFocus: false });
  const buttons = items.map((item) =>
    h(
      'button',
      {
        type: 'button',
        role: 'menuitem',
        tabindex: '-1',
        class: item.danger ? 'menu-item danger' : 'menu-item',
        onclick: () => {
          closeMenu();
          item.action();
        },
      },
      icon(item.icon),
      h('span', {}, item.label),
    ),
  );
  const element = h('div', { role: 'menu', class: 'menu', 'aria-label': label, id: 'session-menu' }, buttons);
  element.addEventListener('keydown', (event) => onKey(event, buttons));
  document.body.append(element);
  anchor.setAttribute('aria-expanded', 'true');
  anchor.setAttribute('aria-controls', element.id);
  const onOutside = (event) => {
    if (!element.contains(event.target) && !anchor.contains(event.target)) closeMenu({ restoreFocus: false });
  };
  document.addEventListener('pointerdown', onOutside, true);
  current = { element, anchor, onOutside };
  place(element, anchor);
  buttons[0]?.focus();
}

/** Closes the open menu, if any; focus goes back to its button unless told otherwise. */
export function closeMenu({ restoreFocus = true } = {}) {
  if (!current) return;
  const { element, anchor, onOutside } = current;
  current = null;
  document.removeEventListener('pointerdown', onOutside, true);
  element.remove();
  anchor.setAttribute('aria-expanded', 'false');
  anchor.removeAttribute('aria-controls');
  if (restoreFocus && anchor.isConnected) anchor.focus();
}

export const isMenuOpen = () => current !== null;

/** After the list re-rendered: moves the open menu to the new button of the same entry. */
export function reanchorMenu(findAnchor) {
  if (!current) return;
  const anchor = findAnchor(current.anchor);
  if (!anchor) {
    closeMenu({ restoreFocus: false });
    return;
  }
  current.anchor = anchor;
  anchor.setAttribute('aria-expanded', 'true');
  anchor.setAttribute('aria-controls', current.element.id);
  place(current.element, anchor);
}

function onKey(event, buttons) {
  const index = buttons.indexOf(document.activeElement);
  const focusAt = (i) => buttons[(i + buttons.length) % buttons.length].focus();
  switch (event.key) {
    case 'ArrowDown':
      focusAt(index + 1);
      break;
    case 'ArrowUp':
      focusAt(index - 1);
      break;
    case 'Home':
      focusAt(0);
      break;
    case 'End':
      focusAt(buttons.length - 1);
      break;
    case 'Escape':
    case 'Tab':
      closeMenu();
      break;
    default:
      return;
  }
  event.preventDefault();
  event.stopPropagation();
}

function place(element, anchor) {
  const box = anchor.getBoundingClientRect();
  const { offsetWidth: width, offsetHeight: height } = element;
  const left = Math.min(Math.max(8, box.right - width), window.innerWidth - width - 8);
  const below = box.bottom + 4;
  const top = below + height > window.innerHeight - 8 ? Math.max(8, box.top - height - 4) : below;
  element.style.left = `${left}px`;
  element.style.top = `${top}px`;
}

// A scroll or resize would leave the menu floating away from its button.
window.addEventListener('resize', () => closeMenu({ restoreFocus: false }));
