/*! Baton chat widget (protocol baton.v1). One tag on any page:
 *   <script src="https://SUPPORT-HOST/widget.js" async
 *           data-title="Help" data-color="#0f766e" data-position="right"></script>
 * Options (data- attributes): title, subtitle, color (any CSS colour), position (right | left),
 * greeting, server (defaults to where this script comes from), open ("true": start open).
 * Everything lives in a Shadow DOM: the page's styles do not reach in, ours do not leak out.
 * The conversation (id, token, last message id, recent messages) is kept in localStorage, so a
 * reload or a lost connection resumes where it stopped. */
(() => {
  'use strict';
  if (window.__batonWidget) return;
  window.__batonWidget = true;

  const script = document.currentScript ||
    [...document.scripts].find((s) => /\/widget\.js(\?|#|$)/.test(s.src));
  const data = (script && script.dataset) || {};
  const base = (data.server || (script && script.src ? new URL(script.src, location.href).origin : location.origin)).replace(/\/+$/, '');
  const okColor = (c) => c && window.CSS && CSS.supports('color', c);
  const cfg = {
    title: data.title || 'Support',
    subtitle: data.subtitle || '',
    color: okColor(data.color) ? data.color : '#4f46e5',
    left: data.position === 'left',
    greeting: data.greeting || 'Hi! Ask me anything. If I can\'t help, I\'ll connect you with a person.',
  };
  const KEY = 'baton.v1:' + base;
  const MAX_KEPT = 200;

  // ---------------------------------------------------------------------------------------
  // State

  const blank = () => ({ id: null, token: null, last: 0, msgs: [], open: false, rated: {} });
  let S = blank();
  try { S = Object.assign(blank(), JSON.parse(localStorage.getItem(KEY)) || {}); } catch (_) { /* private mode */ }
  const save = () => { try { localStorage.setItem(KEY, JSON.stringify(S)); } catch (_) { /* quota or private mode */ } };

  let state = 'bot'; // bot | queued | offered | assigned | resolved
  let agentName = null;
  let offlineForm = false;
  let resolvedId = null;
  let queue = null;
  let ws = null;
  let ready = false;
  let attempt = 0;
  let retryTimer = 0;
  let lastFrameAt = 0;
  let unread = 0;
  let outbox = []; // {cid, text, sent}
  let lastCommand = 'message';
  let typingOff = 0;
  let typingSent = false;
  const seen = new Set();

  // ---------------------------------------------------------------------------------------
  // DOM helpers (text only: nothing from the server is ever parsed as HTML)

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat(Infinity)) if (kid != null && kid !== false) el.append(kid);
    return el;
  }
  const icon = (d, size = 22) => {
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('width', size);
    svg.setAttribute('height', size);
    svg.setAttribute('aria-hidden', 'true');
    const path = document.createElementNS('http://www.w3.org/2000/svg', 'path');
    path.setAttribute('d', d);
    path.setAttribute('fill', 'currentColor');
    svg.append(path);
    return svg;
  };
  const CHAT = 'M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2z';
  const CLOSE = 'M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12 19 17.6 17.6 19 12 13.4 6.4 19 5 17.6 10.6 12 5 6.4z';
  const SEND = 'M3 20.5 21 12 3 3.5v6.6L15 12 3 13.9z';

  /** Text with bare links turned into anchors. */
  function richText(text) {
    const out = document.createDocumentFragment();
    const re = /\bhttps?:\/\/[^\s<>"')]+[^\s<>"').,;:!?]/g;
    let at = 0;
    for (const m of text.matchAll(re)) {
      out.append(text.slice(at, m.index), h('a', { href: m[0], target: '_blank', rel: 'noopener noreferrer' }, m[0]));
      at = m.index + m[0].length;
    }
    out.append(text.slice(at));
    return out;
  }
  const safeUrl = (u) => { try { const x = new URL(u, base); return /^https?:$/.test(x.protocol) ? x.href : null; } catch (_) { return null; } };
  const rid = () => (crypto.randomUUID ? crypto.randomUUID() : Date.now().toString(36) + Math.random().toString(36).slice(2));

  // ---------------------------------------------------------------------------------------
  // Styles

  const CSS_TEXT = `
:host{all:initial}
*{box-sizing:border-box}
.root{--c:${cfg.color};position:fixed;bottom:20px;${cfg.left ? 'left' : 'right'}:20px;z-index:2147483000;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1f2330}
button,input,textarea{font:inherit;color:inherit}
button{cursor:pointer}
:focus-visible{outline:3px solid var(--c);outline-offset:2px}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.launcher{position:relative;width:60px;height:60px;border-radius:50%;border:0;background:var(--c);color:#fff;display:grid;place-items:center;box-shadow:0 6px 20px rgba(0,0,0,.25);margin-${cfg.left ? 'right' : 'left'}:auto}
.launcher:hover{filter:brightness(1.08)}
.badge{position:absolute;top:-2px;right:-2px;min-width:22px;height:22px;padding:0 6px;border-radius:11px;background:#dc2626;color:#fff;font-size:12px;font-weight:700;display:grid;place-items:center;border:2px solid #fff}
.panel{position:absolute;bottom:76px;${cfg.left ? 'left' : 'right'}:0;width:370px;height:min(600px,calc(100vh - 110px));background:#fff;border-radius:16px;box-shadow:0 12px 40px rgba(0,0,0,.22);display:flex;flex-direction:column;overflow:hidden;overflow:clip}
.panel>*{flex:none}
.head{background:var(--c);color:#fff;padding:14px 14px 12px 18px;display:flex;gap:10px;align-items:flex-start}
.head h2{margin:0;font-size:17px;font-weight:650}
.who-now{font-size:13px;opacity:.95;display:flex;align-items:center;gap:6px;margin-top:2px}
.dot{width:8px;height:8px;border-radius:50%;background:#86efac;flex:none}
.dot.off{background:#fca5a5}
.tag{font-size:11px;font-weight:700;text-transform:uppercase;letter-spacing:.04em;background:rgba(255,255,255,.22);border-radius:4px;padding:0 5px}
.x{margin-left:auto;background:transparent;border:0;color:#fff;width:36px;height:36px;border-radius:8px;display:grid;place-items:center;flex:none}
.x:hover{background:rgba(255,255,255,.15)}
.panel>.log{flex:1 1 0;min-height:96px;overflow-y:auto;padding:14px;display:flex;flex-direction:column;gap:10px;background:#f6f7fb}
.msg{max-width:86%;display:flex;flex-direction:column;gap:3px}
.msg .who{font-size:12px;color:#5b6172;display:flex;gap:6px;align-items:center}
.msg .bubble{padding:9px 12px;border-radius:14px;white-space:pre-wrap;overflow-wrap:anywhere}
.msg.customer{align-self:flex-end;align-items:flex-end}
.msg.customer .bubble{background:var(--c);color:#fff;border-bottom-right-radius:4px}
.bubble a{color:var(--c)}
.msg.customer .bubble a{color:#fff}
.msg.bot .bubble{background:#fff;border:1px solid #e3e5ee;border-bottom-left-radius:4px}
.msg.agent .bubble{background:#ecfdf5;border:1px solid #a7f3d0;border-bottom-left-radius:4px}
.msg.pending{opacity:.6}
.msg.draft .bubble{color:#5b6172}
.msg.failed .bubble{background:#fee2e2;color:#7f1d1d}
.role{font-size:10px;font-weight:700;text-transform:uppercase;letter-spacing:.05em;border-radius:4px;padding:1px 5px}
.role.bot{background:#e0e7ff;color:#3730a3}
.role.person{background:#d1fae5;color:#065f46}
.sources{font-size:13px;color:#5b6172;padding-left:4px}
.sources a{color:var(--c);font-weight:600}
.options{display:flex;flex-wrap:wrap;gap:6px;margin-top:2px}
.options button,.chip{border:1px solid var(--c);color:var(--c);background:#fff;border-radius:999px;padding:5px 12px;font-size:14px}
.options button:hover:not(:disabled){background:var(--c);color:#fff}
.options button:disabled{opacity:.5;cursor:default}
.sys{align-self:center;text-align:center;font-size:13px;color:#4b5162;background:#eceef5;border-radius:10px;padding:6px 12px;max-width:92%}
.retry{font-size:12px;background:none;border:0;color:#b91c1c;text-decoration:underline;padding:0}
.status{padding:8px 14px;font-size:13px;background:#fffbeb;border-top:1px solid #fde68a;color:#78350f;display:flex;gap:8px;align-items:center}
.status.conn{background:#fef2f2;border-color:#fecaca;color:#7f1d1d}
.spin{width:14px;height:14px;border-radius:50%;border:2px solid currentColor;border-right-color:transparent;animation:r 1s linear infinite;flex:none}
@keyframes r{to{transform:rotate(360deg)}}
.typing{font-size:13px;color:#5b6172;padding:0 16px;min-height:20px;display:flex;align-items:center;gap:6px;background:#f6f7fb}
.dots{display:inline-flex;gap:3px}
.dots i{width:6px;height:6px;border-radius:50%;background:#9aa0b3;animation:b 1.2s infinite}
.dots i:nth-child(2){animation-delay:.15s}.dots i:nth-child(3){animation-delay:.3s}
@keyframes b{0%,60%,100%{transform:translateY(0);opacity:.5}30%{transform:translateY(-4px);opacity:1}}
.panel>.card{flex:0 1 auto;min-height:0;overflow-y:auto}
.card{margin:0 12px 10px;padding:12px;border:1px solid #e3e5ee;border-radius:12px;background:#fff;display:flex;flex-direction:column;gap:8px}
.card h3{margin:0;font-size:15px}
.card p{margin:0;font-size:13px;color:#5b6172}
.card label{font-size:13px;font-weight:600;display:flex;flex-direction:column;gap:3px}
.fields{display:flex;flex-direction:column;gap:8px}
.card input,.card textarea{border:1px solid #cfd3df;border-radius:8px;padding:7px 9px;font-size:14px;width:100%;resize:vertical}
.err{color:#b91c1c;font-size:13px;min-height:0}
.primary{background:var(--c);color:#fff;border:0;border-radius:8px;padding:8px 14px;font-weight:600}
.link{background:none;border:0;color:var(--c);text-decoration:underline;padding:0;font-size:13px;align-self:flex-start}
.stars{display:flex;gap:4px}
.stars button{font-size:26px;line-height:1;width:40px;height:40px;border-radius:8px;border:1px solid #e3e5ee;background:#fff;color:#c5c9d6}
.stars button.on{color:#f59e0b;border-color:#fcd34d;background:#fffbeb}
.compose{display:flex;gap:8px;padding:10px 12px;border-top:1px solid #e3e5ee;background:#fff;align-items:flex-end}
.compose textarea{flex:1;border:1px solid #cfd3df;border-radius:10px;padding:9px 11px;resize:none;max-height:120px;min-height:42px;font-size:15px}
.send{width:42px;height:42px;border-radius:10px;border:0;background:var(--c);color:#fff;display:grid;place-items:center;flex:none}
.send:disabled{opacity:.45;cursor:default}
.foot{font-size:11px;color:#8b90a0;text-align:center;padding:0 0 8px;background:#fff}
[hidden]{display:none!important}
@media (max-width:480px){
.root.open{inset:0}
.root.open .launcher{display:none}
.panel{position:fixed;inset:0;width:auto;height:auto;border-radius:0}
}
@media (prefers-reduced-motion:reduce){.spin,.dots i{animation:none}}`;

  // ---------------------------------------------------------------------------------------
  // Layout

  const host = h('baton-chat', { id: 'baton-widget' });
  const shadow = host.attachShadow({ mode: 'open' });
  if ('adoptedStyleSheets' in Document.prototype && window.CSSStyleSheet && CSSStyleSheet.prototype.replaceSync) {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS_TEXT);
    shadow.adoptedStyleSheets = [sheet];
  } else {
    shadow.append(h('style', {}, CSS_TEXT));
  }

  const badge = h('span', { class: 'badge', hidden: true, 'aria-hidden': 'true' });
  const launcher = h('button', {
    class: 'launcher', type: 'button', 'aria-expanded': 'false', 'aria-controls': 'baton-panel',
    'aria-label': 'Open chat: ' + cfg.title, onclick: () => setOpen(!S.open),
  }, icon(CHAT, 28), badge);

  const whoNow = h('span', { class: 'who-now-text' });
  const connDot = h('span', { class: 'dot', 'aria-hidden': 'true' });
  const whoTag = h('span', { class: 'tag' });
  const title = h('h2', { id: 'baton-title' }, cfg.title);
  const closeBtn = h('button', { class: 'x', type: 'button', 'aria-label': 'Close chat', onclick: () => setOpen(false) }, icon(CLOSE, 20));
  const head = h('div', { class: 'head' },
    h('div', {}, title, h('div', { class: 'who-now', 'aria-live': 'polite' }, connDot, whoNow, whoTag)), closeBtn);

  const log = h('div', { class: 'log', role: 'log', 'aria-live': 'polite', 'aria-relevant': 'additions', 'aria-label': 'Conversation', tabindex: '0' });
  const typing = h('div', { class: 'typing', role: 'status', 'aria-live': 'polite' });
  const queueBar = h('div', { class: 'status queue', role: 'status', hidden: true });
  const connBar = h('div', { class: 'status conn', role: 'status', hidden: true }, h('span', { class: 'spin', 'aria-hidden': 'true' }), 'Reconnecting…');

  // The offline form: nobody is available, leave an email and a message.
  const offEmail = h('input', { type: 'email', name: 'email', required: true, autocomplete: 'email', placeholder: 'you@example.com' });
  const offText = h('textarea', { name: 'message', rows: '3', required: true, placeholder: 'How can we help?' });
  const offErr = h('p', { class: 'err', role: 'alert' });
  const offFields = h('div', { class: 'fields', id: 'baton-offline-fields', hidden: true },
    h('label', {}, 'Email', offEmail), h('label', {}, 'Message', offText), offErr,
    h('button', { class: 'primary', type: 'submit' }, 'Send message'));
  const offOpen = h('button', { class: 'link', type: 'button', 'aria-expanded': 'false', 'aria-controls': 'baton-offline-fields', onclick: () => {
    offFields.hidden = !offFields.hidden;
    offOpen.setAttribute('aria-expanded', String(!offFields.hidden));
    if (!offFields.hidden) { offEmail.focus(); scrollDown(); }
  } }, 'Leave your email and a message');
  const offline = h('form', { class: 'card offline', hidden: true, 'aria-label': 'Leave a message', onsubmit: (e) => {
    e.preventDefault();
    offErr.textContent = '';
    if (!offEmail.value.trim() || !offText.value.trim()) { offErr.textContent = 'Please give your email and a message.'; return; }
    command({ type: 'leave_message', email: offEmail.value.trim(), text: offText.value.trim() }, 'leave');
  } },
  h('p', {}, 'We\'ll reply by email, and your place in the queue is kept.'),
  offOpen, offFields);

  // The rating card, after the conversation is resolved.
  let score = 0;
  const starBtns = [1, 2, 3, 4, 5].map((n) => h('button', {
    type: 'button', 'aria-label': n + (n === 1 ? ' star' : ' stars') + ' out of 5', 'aria-pressed': 'false', 'data-score': String(n),
    onclick: () => { score = n; starBtns.forEach((b, i) => { b.classList.toggle('on', i < n); b.setAttribute('aria-pressed', String(i + 1 === n)); }); rateSend.disabled = false; },
  }, '★'));
  const rateComment = h('textarea', { rows: '2', placeholder: 'Anything to add? (optional)', 'aria-label': 'Comment (optional)' });
  const rateErr = h('p', { class: 'err', role: 'alert' });
  const rateSend = h('button', { class: 'primary', type: 'submit', disabled: true }, 'Send rating');
  const rateForm = h('form', { class: 'rate-form', onsubmit: (e) => {
    e.preventDefault();
    if (!score || resolvedId == null) return;
    const comment = rateComment.value.trim();
    command(comment ? { type: 'rate', score, comment } : { type: 'rate', score }, 'rate');
    S.rated[resolvedId] = score;
    save();
    renderCards();
  } }, h('div', { class: 'stars', role: 'group', 'aria-label': 'Your rating' }, starBtns), rateComment, rateErr, rateSend);
  const rateThanks = h('p', { class: 'thanks' });
  const rating = h('div', { class: 'card rating', hidden: true, role: 'region', 'aria-label': 'Rate this conversation' },
    h('h3', {}, 'How did we do?'), rateForm, rateThanks,
    h('button', { class: 'link', type: 'button', onclick: () => restart() }, 'Start a new conversation'));

  const input = h('textarea', { rows: '1', 'aria-label': 'Your message', placeholder: 'Write a message…', maxlength: '4000' });
  const sendBtn = h('button', { class: 'send', type: 'submit', 'aria-label': 'Send message', disabled: true }, icon(SEND, 20));
  const compose = h('form', { class: 'compose', onsubmit: (e) => { e.preventDefault(); sendText(input.value); } }, input, sendBtn);

  const panel = h('div', { class: 'panel', id: 'baton-panel', role: 'dialog', 'aria-labelledby': 'baton-title', hidden: true },
    head, log, typing, queueBar, connBar, offline, rating, compose,
    h('div', { class: 'foot' }, 'Answers may come from our help centre assistant'));
  const root = h('div', { class: 'root' }, panel, launcher);
  shadow.append(root);

  input.addEventListener('input', () => {
    sendBtn.disabled = !input.value.trim();
    input.style.height = 'auto';
    input.style.height = Math.min(input.scrollHeight, 120) + 'px';
    if (state === 'assigned' && input.value.trim()) customerTyping();
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendText(input.value); }
  });
  panel.addEventListener('keydown', (e) => { if (e.key === 'Escape') { setOpen(false); } });

  // ---------------------------------------------------------------------------------------
  // Rendering

  function atBottom() { return log.scrollHeight - log.scrollTop - log.clientHeight < 60; }
  function scrollDown() { log.scrollTop = log.scrollHeight; }

  function roleLabel(m) {
    if (m.role === 'bot') return [h('span', { class: 'role bot' }, 'Bot'), 'Assistant'];
    if (m.role === 'agent') return [h('span', { class: 'role person' }, 'Person'), m.author || 'Support agent'];
    return ['You'];
  }

  function messageEl(m) {
    if (m.role === 'system') return h('div', { class: 'sys', 'data-id': m.id, 'data-kind': m.kind || '' }, m.text);
    const meta = m.meta || {};
    const el = h('div', { class: 'msg ' + m.role, 'data-id': m.id, 'data-role': m.role },
      h('div', { class: 'who' }, roleLabel(m), h('span', { class: 'sr' }, ' said:')),
      h('div', { class: 'bubble' }, richText(m.text)));
    const sources = (meta.sources || []).filter((s) => s && s.title);
    if (m.role === 'bot' && sources.length) {
      el.append(h('div', { class: 'sources' }, sources.length > 1 ? 'Sources: ' : 'Source: ',
        sources.map((s, i) => {
          const url = s.url && safeUrl(s.url);
          const item = url ? h('a', { href: url, target: '_blank', rel: 'noopener noreferrer', class: 'source' }, s.title) : h('span', { class: 'source' }, s.title);
          return i ? [', ', item] : item;
        })));
    }
    const options = (meta.options || []).filter((o) => o && o.label);
    if (m.role === 'bot' && options.length) {
      el.append(h('div', { class: 'options', role: 'group', 'aria-label': 'Suggested answers' },
        options.map((o) => h('button', { type: 'button', class: 'option', onclick: () => sendText(o.label) }, o.label))));
    }
    return el;
  }

  function greeting() {
    return h('div', { class: 'msg bot greeting' }, h('div', { class: 'who' }, roleLabel({ role: 'bot' })), h('div', { class: 'bubble' }, cfg.greeting));
  }

  /** A message from the server (live, resumed or from the local copy). */
  /** The answer an LLM is writing, as it streams (delta frames): a draft bubble at the end of
   *  the log, replaced by the stored reply when it arrives. Text only, never HTML. */
  function showDraft(text) {
    let draft = log.querySelector('.msg.draft .bubble');
    if (!draft) {
      const stick = atBottom();
      draft = h('div', { class: 'bubble' });
      log.append(h('div', { class: 'msg bot draft', 'aria-busy': 'true' }, draft));
      if (stick) scrollDown();
    }
    draft.textContent += String(text || '');
  }

  function addMessage(m, fromCache) {
    if (m && m.role === 'bot') log.querySelectorAll('.msg.draft').forEach((d) => d.remove());
    if (!m || typeof m.id !== 'number' || seen.has(m.id)) return;
    seen.add(m.id);
    const stick = atBottom();
    if (!fromCache) {
      S.msgs.push(m);
      if (S.msgs.length > MAX_KEPT) S.msgs.splice(0, S.msgs.length - MAX_KEPT);
      if (m.id > S.last) S.last = m.id;
    }
    if (m.client_message_id) {
      const pending = log.querySelector(`[data-cid="${CSS.escape(m.client_message_id)}"]`);
      if (pending) pending.remove();
      outbox = outbox.filter((o) => o.cid !== m.client_message_id);
    }
    // Ids only grow, but a pending bubble may sit below: keep the log in id order.
    const el = messageEl(m);
    const after = [...log.querySelectorAll('[data-id]')].find((x) => Number(x.dataset.id) > m.id);
    if (after) log.insertBefore(el, after); else log.insertBefore(el, log.querySelector('.pending') || null);
    if (m.role === 'customer') log.querySelectorAll('.options button').forEach((b) => { b.disabled = true; });
    follow(m);
    if (!fromCache && !S.open && m.role !== 'customer') { unread++; renderBadge(); }
    if (stick || m.role === 'customer') scrollDown();
  }

  /** Conversation state as the transcript tells it (frames from the server refine it). */
  function follow(m) {
    const meta = m.meta || {};
    if (m.role === 'customer') { resolvedId = null; return; }
    if (m.role === 'bot') {
      if (meta.decision === 'handoff') setState('queued');
      return;
    }
    if (m.role === 'agent') { if (m.author) agentName = m.author; return; }
    switch (m.kind) {
      case 'agent_joined': agentName = meta.author || m.author || agentName; offlineForm = false; setState('assigned'); break;
      case 'agent_left': case 'transferred': case 'reassigning': agentName = null; setState('queued'); break;
      case 'offline': offlineForm = !!meta.offline_form; break;
      case 'message_left': offlineForm = false; offText.value = ''; break;
      case 'resolved': agentName = null; offlineForm = false; resolvedId = m.id; setState('resolved'); break;
      case 'handed_back': agentName = null; offlineForm = false; setState('bot'); break;
      default: break;
    }
  }

  function setState(next) {
    state = next;
    if (state !== 'queued' && state !== 'offered') queue = null;
    renderHeader();
    renderCards();
  }

  function renderHeader() {
    let text = cfg.subtitle || 'You\'re chatting with our assistant';
    let tag = 'Bot';
    if (state === 'assigned') {
      text = agentName ? `You're chatting with ${agentName}` : 'You\'re chatting with a person from our team';
      tag = 'Person';
    } else if (state === 'queued' || state === 'offered') {
      text = 'Connecting you to a person…';
      tag = '';
    } else if (state === 'resolved') {
      text = 'Conversation resolved';
      tag = '';
    }
    whoNow.textContent = text;
    whoTag.textContent = tag;
    whoTag.hidden = !whoTag.textContent;
    connDot.classList.toggle('off', !!S.id && !ready);
  }

  function renderCards() {
    const stick = atBottom();
    // Waiting for a person: place in the queue and the estimated wait.
    const waiting = state === 'queued' || state === 'offered';
    queueBar.hidden = !waiting;
    queueBar.replaceChildren(h('span', { class: 'spin', 'aria-hidden': 'true' }), h('span', {}, queueText()));
    offline.hidden = !(waiting && offlineForm);
    const rated = resolvedId != null ? S.rated[resolvedId] : undefined;
    rating.hidden = resolvedId == null;
    rateForm.hidden = rated != null;
    rateThanks.hidden = rated == null;
    rateThanks.textContent = rated != null ? `Thanks for your feedback (${rated} out of 5)!` : '';
    // The cards take room from the log: keep the newest message in view.
    if (stick) scrollDown();
  }

  function queueText() {
    let text = 'Connecting you to a person…';
    if (!queue) return text;
    text += ` You're number ${queue.position} in the queue.`;
    if (queue.agents_online > 0 && queue.estimated_wait_secs > 0) {
      const mins = Math.max(1, Math.round(queue.estimated_wait_secs / 60));
      text += ` Estimated wait: about ${mins} minute${mins === 1 ? '' : 's'}.`;
    } else if (queue.agents_online === 0) {
      text += ' Nobody is online right now.';
    }
    return text;
  }

  function setTyping(who, name, on) {
    clearTimeout(setTyping.t);
    if (!on) { typing.replaceChildren(); return; }
    const label = who === 'agent' ? `${name || agentName || 'The agent'} is typing` : 'The assistant is typing';
    typing.replaceChildren(h('span', { class: 'dots', 'aria-hidden': 'true' }, h('i'), h('i'), h('i')), label + '…');
    // A lost "off" must not leave the dots forever.
    setTyping.t = setTimeout(() => typing.replaceChildren(), 15000);
  }

  function renderBadge() {
    badge.hidden = unread === 0;
    badge.textContent = unread > 9 ? '9+' : String(unread);
    launcher.setAttribute('aria-label', `Open chat: ${cfg.title}` + (unread ? ` (${unread} new)` : ''));
  }

  function setOpen(open) {
    S.open = open;
    save();
    panel.hidden = !open;
    root.classList.toggle('open', open);
    launcher.setAttribute('aria-expanded', String(open));
    if (open) {
      unread = 0;
      renderBadge();
      scrollDown();
      input.focus();
    } else {
      launcher.focus();
    }
  }

  // ---------------------------------------------------------------------------------------
  // Talking to the server

  async function ensureConversation() {
    if (S.id) return;
    const response = await fetch(base + '/v1/conversations', { method: 'POST', headers: { accept: 'application/json' } });
    if (!response.ok) throw new Error('could not start a conversation: ' + response.status);
    const body = await response.json();
    S.id = body.id;
    S.token = body.token;
    S.last = 0;
    save();
  }

  function sendText(raw) {
    const text = (raw || '').trim();
    if (!text) return;
    input.value = '';
    input.style.height = 'auto';
    sendBtn.disabled = true;
    stopTyping();
    const cid = 'w-' + rid();
    outbox.push({ cid, text, sent: false });
    log.append(h('div', { class: 'msg customer pending', 'data-cid': cid },
      h('div', { class: 'who' }, 'You', h('span', { class: 'sr' }, ' (sending):')), h('div', { class: 'bubble' }, text)));
    scrollDown();
    ensureConversation().then(() => { if (!ws) connect(); else flush(); }).catch(() => failPending('We could not reach the support server.'));
  }

  function flush() {
    if (!ws || !ready) return;
    for (const o of outbox) {
      if (o.sent) continue;
      o.sent = true;
      lastCommand = 'message';
      ws.send(JSON.stringify({ type: 'message', text: o.text, client_message_id: o.cid }));
    }
  }

  /** The oldest message in flight failed: offer to send it again. */
  function failPending(reason) {
    const o = outbox.shift();
    if (!o) return;
    const el = log.querySelector(`[data-cid="${CSS.escape(o.cid)}"]`);
    if (!el) return;
    el.classList.remove('pending');
    el.classList.add('failed');
    el.append(h('button', { type: 'button', class: 'retry', onclick: () => { el.remove(); sendText(o.text); } }, 'Not sent. ' + reason + ' Retry'));
  }

  function command(frame, kind) {
    if (!ws || !ready) {
      (kind === 'rate' ? rateErr : offErr).textContent = 'Not connected; trying again…';
      setTimeout(() => { if (ws && ready) command(frame, kind); }, 1500);
      return;
    }
    (kind === 'rate' ? rateErr : offErr).textContent = '';
    lastCommand = kind;
    ws.send(JSON.stringify(frame));
  }

  function customerTyping() {
    if (!ws || !ready) return;
    if (!typingSent) { ws.send(JSON.stringify({ type: 'typing', on: true })); typingSent = true; }
    clearTimeout(typingOff);
    typingOff = setTimeout(stopTyping, 3000);
  }
  function stopTyping() {
    clearTimeout(typingOff);
    if (typingSent && ws && ready) ws.send(JSON.stringify({ type: 'typing', on: false }));
    typingSent = false;
  }

  function connect() {
    clearTimeout(retryTimer);
    if (!S.id || ws) return;
    const url = base.replace(/^http/, 'ws') + '/v1/conversations/' + encodeURIComponent(S.id) + '/ws?token=' + encodeURIComponent(S.token);
    let sock;
    try { sock = new WebSocket(url); } catch (_) { retry(); return; }
    ws = sock;
    let hello = false;
    sock.onmessage = (e) => {
      let f;
      try { f = JSON.parse(e.data); } catch (_) { return; }
      lastFrameAt = Date.now();
      if (f.type === 'hello') hello = true;
      onFrame(f);
    };
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      ready = false;
      typingSent = false;
      for (const o of outbox) o.sent = false; // resent on reconnect; the server stores each once
      setTyping(null, null, false);
      renderHeader();
      connBar.hidden = !S.id;
      if (!hello) verify(); else retry();
    };
  }

  /** A socket that never said hello: is the conversation still ours, or just the network? */
  function verify() {
    fetch(`${base}/v1/conversations/${encodeURIComponent(S.id)}?limit=1&after=${S.last}`, { headers: { authorization: 'Bearer ' + S.token } })
      .then((r) => {
        if (r.status === 401 || r.status === 403 || r.status === 404) restart(true);
        else retry();
      }, retry);
  }

  function retry() {
    clearTimeout(retryTimer);
    if (!S.id) return;
    const delay = Math.min(30000, 500 * 2 ** attempt) * (0.75 + Math.random() / 2);
    attempt = Math.min(attempt + 1, 10);
    retryTimer = setTimeout(connect, delay);
  }

  function onFrame(f) {
    switch (f.type) {
      case 'hello':
        attempt = 0;
        ready = true;
        connBar.hidden = true;
        setState(f.state || 'bot');
        ws.send(JSON.stringify({ type: 'resume', after: S.last }));
        flush();
        break;
      case 'message':
        addMessage(f.message, false);
        save();
        renderCards();
        renderHeader();
        break;
      case 'delta':
        showDraft(f.text);
        break;
      case 'ack':
        outbox = outbox.filter((o) => o.cid !== f.client_message_id);
        break;
      case 'typing':
        setTyping(f.who, f.name, f.on);
        break;
      case 'queue':
        queue = f;
        if (state !== 'queued' && state !== 'offered') state = 'queued';
        renderHeader();
        renderCards();
        break;
      case 'state':
        setState(f.state);
        break;
      case 'error':
        log.querySelectorAll('.msg.draft').forEach((d) => d.remove());
        if (lastCommand === 'leave') offErr.textContent = f.message || 'That did not work.';
        else if (lastCommand === 'rate') rateErr.textContent = f.message || 'That did not work.';
        else failPending(f.code === 'message_too_long' ? 'That message is too long.' : 'Something went wrong.');
        break;
      default: break; // pong, or frames from a newer server
    }
  }

  /** Forget the conversation and start afresh (after a rating, or when it is gone). */
  function restart(gone) {
    clearLocal();
    S = Object.assign(blank(), { open: S.open });
    save();
    if (!gone) input.focus();
  }

  /** Empty the window and drop the connection (the stored copy is left alone). */
  function clearLocal() {
    clearTimeout(retryTimer);
    if (ws) { const old = ws; ws = null; old.close(); }
    ready = false;
    seen.clear();
    outbox = [];
    agentName = null; offlineForm = false; resolvedId = null; queue = null; score = 0;
    starBtns.forEach((b) => { b.classList.remove('on'); b.setAttribute('aria-pressed', 'false'); });
    rateSend.disabled = true;
    rateComment.value = '';
    connBar.hidden = true;
    log.replaceChildren(greeting());
    setState('bot');
  }

  // Keep the connection honest: a ping every 25 s, and a socket silent for a minute is replaced.
  setInterval(() => {
    if (!ws || !ready) return;
    if (Date.now() - lastFrameAt > 60000) { ws.close(); return; }
    ws.send('{"type":"ping"}');
  }, 25000);
  window.addEventListener('online', () => { attempt = 0; if (!ws) connect(); });
  document.addEventListener('visibilitychange', () => { if (!document.hidden && !ws && S.id) { attempt = 0; connect(); } });
  window.addEventListener('storage', (e) => {
    // Another tab started or ended a conversation on this site: follow it.
    if (e.key !== KEY) return;
    let other = null;
    try { other = JSON.parse(e.newValue); } catch (_) { /* ignore */ }
    if (!other || other.id === S.id) return;
    clearLocal();
    S = Object.assign(blank(), other);
    for (const m of S.msgs) addMessage(m, true);
    renderCards();
    connect();
  });

  // ---------------------------------------------------------------------------------------
  // Start

  function start() {
    document.body.append(host);
    log.append(greeting());
    for (const m of S.msgs) addMessage(m, true);
    renderHeader();
    renderCards();
    if (S.open) setOpen(true);
    else if (data.open === 'true') setOpen(true);
    if (S.id) connect();
  }
  if (document.body) start(); else document.addEventListener('DOMContentLoaded', start);
})();
