// Small helpers both pages share: building elements, and an avatar for a person.

/** `<tag>` with attributes (`class`, `text` for its text, others as attributes) and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

/** Initials for an avatar: "Ana Lima" → "AL", "customer-1" → "C1". */
export function initials(name, userId) {
  const words = (name || userId).split(/[\s._:-]+/).filter(Boolean);
  return (words.length > 1 ? words[0][0] + words[1][0] : words[0]?.slice(0, 2) ?? '?').toUpperCase();
}

/** A stable hue for a user, so that an avatar keeps its colour across updates and pages. */
export function hue(userId) {
  let h = 2166136261; // FNV-1a: similar ids ("c1", "c2") still get far-apart colours
  for (const ch of userId) h = Math.imul(h ^ ch.codePointAt(0), 16777619) >>> 0;
  return h % 360;
}

/** A round badge with the person's initials in their colour (decorative: the name is beside it). */
export function avatarBadge(name, userId) {
  const badge = el('span', { class: 'avatar', 'aria-hidden': 'true', text: initials(name, userId) });
  // Set through the CSSOM: the pages' Content-Security-Policy refuses inline style attributes.
  badge.style.setProperty('--hue', String(hue(userId)));
  return badge;
}
