/* Baton agent console (protocol baton.v1, docs/protocol.md): log in, go online, take conversations
 * from the queue or as they are assigned, read the bot's context, reply, write internal notes,
 * transfer, resolve or hand back to the bot. No framework: state in one object, plain DOM. */
(() => {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const SESSION = 'baton.console';
  const DEFAULT_SKILLS = ['general', 'billing', 'accounts', 'shipping', 'technical'];
  const REASONS = {
    explicit_request: 'Asked for a person',
    intent_requires_human: 'Topic always needs a person',
    out_of_scope: 'Outside what the bot covers',
    low_confidence: 'Bot unsure what was meant',
    no_knowledge: 'No article close enough',
    repeated_failure: 'Bot failed twice in a row',
    frustration: 'Customer is frustrated',
  };
  const UNASSIGNED = {
    resolved: 'resolved',
    handed_back: 'handed back to the bot',
    transferred: 'transferred',
    declined: 'declined',
    offer_expired: 'offer expired',
    no_reply: 'reassigned: no reply in time',
    agent_disconnected: 'reassigned while you were disconnected',
  };

  const st = {
    token: null,
    agent: null,
    status: 'offline',
    capacity: 0,
    convs: new Map(), // id -> {id, ctx, msgs: Map, notes: [], unread, typing, draft}
    offers: new Map(), // id -> {ctx, expires_at}
    queue: [],
    queueAt: Date.now(),
    selected: null,
    ws: null,
    ready: false,
    attempt: 0,
    retry: 0,
    lastFrameAt: 0,
    claimed: new Set(),
    alerts: 0,
    typingSent: false,
    typingTimer: 0,
  };

  // ---------------------------------------------------------------------------------------
  // Helpers

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k in el && typeof v !== 'string') el[k] = v;
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat(Infinity)) if (kid != null && kid !== false) el.append(kid);
    return el;
  }
  const short = (id) => String(id || '').slice(0, 8);
  const pct = (x) => `${Math.round((Number(x) || 0) * 100)}%`;
  const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  function duration(secs) {
    secs = Math.max(0, Math.floor(secs));
    const m = Math.floor(secs / 60);
    const s = String(secs % 60).padStart(2, '0');
    return m >= 60 ? `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m` : `${m}:${s}`;
  }
  const rid = () => (crypto.randomUUID ? crypto.randomUUID() : Date.now().toString(36) + Math.random().toString(36).slice(2));
  const safeUrl = (u) => { try { const x = new URL(u, location.href); return /^https?:$/.test(x.protocol) ? x.href : null; } catch (_) { return null; } };

  function toast(text, kind) {
    const el = h('div', { class: 'toast' + (kind ? ' ' + kind : ''), role: kind === 'error' ? 'alert' : 'status' }, text);
    $('toasts').append(el);
    setTimeout(() => el.remove(), kind === 'error' ? 8000 : 6000);
  }

  // A short two-note chime from WebAudio (no sound file). Browsers only allow audio after a
  // gesture: the context is created on the first click (the login button at the latest).
  let audio = null;
  function unlockAudio() {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      if (audio.state === 'suspended') audio.resume();
    } catch (_) { audio = null; }
  }
  function beep() {
    document.body.dataset.beeps = String(Number(document.body.dataset.beeps || 0) + 1);
    if (!audio) return;
    const t = audio.currentTime;
    [[660, 0], [880, 0.16]].forEach(([freq, at]) => {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, t + at);
      gain.gain.exponentialRampToValueAtTime(0.25, t + at + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + at + 0.3);
      osc.connect(gain).connect(audio.destination);
      osc.start(t + at);
      osc.stop(t + at + 0.32);
    });
  }
  function alertNew(text) {
    st.alerts++;
    document.title = `(${st.alerts}) ${text} · Baton console`;
    beep();
  }
  function clearAlerts() {
    st.alerts = 0;
    document.title = 'Baton console';
  }

  // ---------------------------------------------------------------------------------------
  // Session

  async function api(path, options = {}) {
    const headers = Object.assign({ accept: 'application/json' }, options.headers || {});
    if (st.token) headers.authorization = 'Bearer ' + st.token;
    if (options.body) headers['content-type'] = 'application/json';
    return fetch(path, Object.assign({}, options, { headers }));
  }

  async function login(e) {
    e.preventDefault();
    unlockAudio();
    const error = $('login-error');
    error.textContent = '';
    $('login-submit').disabled = true;
    try {
      const response = await fetch('/v1/agents/login', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: $('login-name').value.trim(), password: $('login-password').value }),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        error.textContent = response.status === 403 ? 'Wrong name or password.' : (body.error && body.error.message) || `Login failed (${response.status}).`;
        return;
      }
      st.token = body.token;
      st.agent = body.agent;
      sessionStorage.setItem(SESSION, JSON.stringify({ token: body.token, agent: body.agent }));
      $('login-password').value = '';
      showApp();
    } catch (_) {
      error.textContent = 'The server cannot be reached.';
    } finally {
      $('login-submit').disabled = false;
    }
  }

  async function logout(message) {
    if (st.token && !message) api('/v1/agents/logout', { method: 'POST' }).catch(() => {});
    sessionStorage.removeItem(SESSION);
    st.token = null;
    st.agent = null;
    st.convs.clear();
    st.offers.clear();
    st.queue = [];
    st.selected = null;
    clearTimeout(st.retry);
    if (st.ws) { const old = st.ws; st.ws = null; old.close(); }
    st.ready = false;
    $('app').hidden = true;
    $('login-view').hidden = false;
    $('login-error').textContent = message || '';
    clearAlerts();
    $('login-name').focus();
  }

  function showApp() {
    $('login-view').hidden = true;
    $('app').hidden = false;
    render();
    connect();
  }

  // ---------------------------------------------------------------------------------------
  // Socket

  function send(frame) {
    if (!st.ws || !st.ready) { toast('Not connected: try again in a moment.', 'error'); return false; }
    st.ws.send(JSON.stringify(frame));
    return true;
  }

  function connect() {
    clearTimeout(st.retry);
    if (!st.token || st.ws) return;
    const sock = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/v1/agents/ws?token=${encodeURIComponent(st.token)}`);
    st.ws = sock;
    let hello = false;
    sock.onmessage = (e) => {
      let f;
      try { f = JSON.parse(e.data); } catch (_) { return; }
      st.lastFrameAt = Date.now();
      if (f.type === 'hello') hello = true;
      onFrame(f);
    };
    sock.onclose = () => {
      if (st.ws !== sock) return;
      st.ws = null;
      st.ready = false;
      st.typingSent = false;
      renderTop();
      if (hello) { retry(); return; }
      // Refused before the upgrade: an expired token, or the server is away?
      api('/v1/agents/me').then((r) => {
        if (r.status === 401 || r.status === 403) logout('Your session has ended: log in again.');
        else retry();
      }, retry);
    };
  }

  function retry() {
    const delay = Math.min(30000, 500 * 2 ** st.attempt) * (0.75 + Math.random() / 2);
    st.attempt = Math.min(st.attempt + 1, 10);
    st.retry = setTimeout(connect, delay);
  }

  function conv(ctx) {
    const existing = st.convs.get(ctx.conversation_id);
    const c = existing || { id: ctx.conversation_id, msgs: new Map(), notes: [], unread: 0, typing: false, draft: '' };
    c.ctx = ctx;
    for (const m of ctx.transcript || []) c.msgs.set(m.id, m);
    c.notes = (ctx.notes || []).slice();
    st.convs.set(c.id, c);
    return c;
  }

  function onFrame(f) {
    switch (f.type) {
      case 'hello': {
        st.ready = true;
        st.attempt = 0;
        st.agent = f.agent;
        st.status = f.agent.status;
        st.capacity = f.agent.capacity;
        const held = new Set();
        for (const ctx of f.conversations || []) { conv(ctx); held.add(ctx.conversation_id); }
        for (const id of [...st.convs.keys()]) if (!held.has(id)) st.convs.delete(id);
        if (st.selected && !st.convs.has(st.selected)) st.selected = null;
        if (!st.selected && st.convs.size) st.selected = st.convs.keys().next().value;
        setQueue(f.queue || []);
        render();
        break;
      }
      case 'assigned': {
        const c = conv(f.conversation);
        st.offers.delete(c.id);
        const mine = st.claimed.delete(c.id);
        if (mine || !st.selected) select(c.id, false);
        if (!mine) {
          alertNew('New conversation');
          toast(`New conversation assigned: ${describe(c.ctx)}`);
        }
        render();
        break;
      }
      case 'offer':
        st.offers.set(f.conversation.conversation_id, { ctx: f.conversation, expires_at: f.expires_at, at: Date.now() });
        alertNew('Conversation offered');
        renderSidebar();
        break;
      case 'unassigned': {
        const had = st.convs.delete(f.conversation_id) || st.offers.delete(f.conversation_id);
        if (had) toast(`Conversation ${short(f.conversation_id)}: ${UNASSIGNED[f.reason] || f.reason}.`);
        if (st.selected === f.conversation_id) {
          st.selected = null;
          const next = st.convs.keys().next();
          if (!next.done) select(next.value, false);
        }
        render();
        break;
      }
      case 'message': {
        const c = st.convs.get(f.conversation_id);
        if (!c) { const o = st.offers.get(f.conversation_id); if (o) o.ctx.transcript.push(f.message); break; }
        if (c.msgs.has(f.message.id)) break;
        c.msgs.set(f.message.id, f.message);
        if (f.message.role === 'customer') {
          c.typing = false;
          if (st.selected !== c.id || document.hidden) c.unread++;
          refreshContext(c.id);
        }
        renderSidebar();
        if (st.selected === c.id) renderTranscript();
        break;
      }
      case 'typing': {
        const c = st.convs.get(f.conversation_id);
        if (!c) break;
        c.typing = f.on;
        clearTimeout(c.typingTimer);
        if (f.on) c.typingTimer = setTimeout(() => { c.typing = false; renderTyping(); renderSidebar(); }, 10000);
        renderTyping();
        renderSidebar();
        break;
      }
      case 'note': {
        const c = st.convs.get(f.conversation_id);
        if (!c) break;
        c.notes.push(f.note);
        if (st.selected === c.id) { renderTranscript(); renderContext(); }
        break;
      }
      case 'queue':
        setQueue(f.queue || []);
        renderSidebar();
        break;
      case 'presence':
        st.status = f.status;
        st.capacity = f.capacity;
        renderTop();
        renderSidebar();
        break;
      case 'rated':
        toast(`Customer of conversation ${short(f.conversation_id)} rated it ${'★'.repeat(f.score)}${'☆'.repeat(5 - f.score)} (${f.score}/5).`);
        break;
      case 'error':
        toast(f.message || f.code, 'error');
        if (f.conversation_id) st.claimed.delete(f.conversation_id);
        break;
      default:
        break; // pong, or frames from a newer server
    }
  }

  function setQueue(queue) {
    st.queue = queue;
    st.queueAt = Date.now();
  }

  /** The bot's understanding of the latest customer message, fetched again after each one. */
  const refreshing = new Map();
  function refreshContext(id) {
    clearTimeout(refreshing.get(id));
    refreshing.set(id, setTimeout(async () => {
      refreshing.delete(id);
      try {
        const response = await api(`/v1/conversations/${encodeURIComponent(id)}/context`);
        if (!response.ok || !st.convs.has(id)) return;
        const c = st.convs.get(id);
        const ctx = await response.json();
        for (const m of ctx.transcript || []) c.msgs.set(m.id, m);
        c.ctx = ctx;
        c.notes = (ctx.notes || []).slice();
        if (st.selected === id) { renderContext(); renderTranscript(); }
      } catch (_) { /* the next message tries again */ }
    }, 400));
  }

  // ---------------------------------------------------------------------------------------
  // Rendering

  function describe(ctx) {
    const intent = ctx.intent ? ctx.intent.name.replace(/_/g, ' ') : 'no clear intent';
    return `${intent} (${ctx.skill})`;
  }

  function render() {
    renderTop();
    renderSidebar();
    renderChat();
  }

  function renderTop() {
    const a = st.agent;
    $('me').textContent = a ? `${a.display_name} · ${a.skills.includes('*') ? 'all teams' : a.skills.join(', ')}` : '';
    for (const b of document.querySelectorAll('#presence button')) b.setAttribute('aria-pressed', String(b.dataset.status === st.status));
    $('load').textContent = `${st.convs.size}/${st.capacity} conversations`;
    const conn = $('conn');
    conn.textContent = st.ready ? 'Connected' : st.token ? 'Reconnecting…' : '';
    conn.classList.toggle('down', !st.ready);
  }

  function lastText(c) {
    const msgs = [...c.msgs.values()].filter((m) => m.role === 'customer' || m.role === 'agent');
    return msgs.length ? msgs[msgs.length - 1].text : c.ctx.summary || '';
  }

  function renderSidebar() {
    // Offers (offer mode): accept or decline before they expire.
    const offers = $('offers');
    offers.replaceChildren(...[...st.offers.entries()].map(([id, o]) => h('li', { class: 'offer', 'data-id': id },
      h('strong', {}, `Offer: ${describe(o.ctx)}`),
      h('span', { class: 'preview' }, o.ctx.summary || ''),
      h('span', { class: 'expires', 'data-expires': String(o.expires_at) }, ''),
      h('div', { class: 'buttons' },
        h('button', { type: 'button', class: 'primary', onclick: () => { st.claimed.add(id); clearAlerts(); send({ type: 'accept', conversation_id: id }); } }, 'Accept'),
        h('button', { type: 'button', class: 'ghost', onclick: () => { clearAlerts(); send({ type: 'decline', conversation_id: id }); } }, 'Decline')))));
    $('offers-section').hidden = st.offers.size === 0;

    const mine = $('mine');
    mine.replaceChildren(...[...st.convs.values()].map((c) => h('li', {},
      h('button', {
        type: 'button', class: 'conv' + (st.selected === c.id ? ' selected' : ''), 'data-id': c.id,
        'aria-current': st.selected === c.id ? 'true' : null, onclick: () => select(c.id, true),
      },
      h('span', { class: 'line1' }, `Customer ${short(c.id)}`, h('span', { class: 'prio ' + c.ctx.priority }, c.ctx.priority),
        c.unread ? h('span', { class: 'unread', 'aria-label': `${c.unread} unread` }, String(c.unread)) : null),
      h('span', { class: 'preview' }, c.typing ? 'typing…' : lastText(c)),
      h('span', { class: 'preview' }, describe(c.ctx))))));
    $('mine-empty').hidden = st.convs.size > 0;
    $('mine-count').textContent = `${st.convs.size}/${st.capacity || '?'}`;

    // The queue, per skill, in the server's order (priority, frustration, waiting time).
    const groups = new Map();
    for (const item of st.queue) {
      if (!groups.has(item.skill)) groups.set(item.skill, []);
      groups.get(item.skill).push(item);
    }
    const full = st.capacity > 0 && st.convs.size >= st.capacity;
    $('queue').replaceChildren(...[...groups.entries()].map(([skill, items]) => h('div', { class: 'skill-group' },
      h('h3', {}, `${skill} (${items.length})`),
      items.map((q) => h('div', { class: 'qitem', 'data-id': q.conversation_id },
        h('div', { class: 'line1' }, h('span', { class: 'prio ' + q.priority }, q.priority),
          h('span', {}, q.intent ? q.intent.replace(/_/g, ' ') : 'no clear intent'),
          h('span', { class: 'wait', 'data-wait': String(q.waiting_secs), title: 'Waiting time' }, duration(q.waiting_secs))),
        h('span', { class: 'preview' }, q.preview || ''),
        h('div', { class: 'chips' }, (q.reasons || []).map((r) => h('span', { class: 'chip' }, REASONS[r] || r)),
          q.frustration > 0 ? h('span', { class: 'chip' }, `frustration ${pct(q.frustration)}`) : null),
        h('button', {
          type: 'button', class: 'primary claim', disabled: full, title: full ? 'You are at capacity' : null,
          onclick: () => { st.claimed.add(q.conversation_id); send({ type: 'claim', conversation_id: q.conversation_id }); },
        }, 'Claim'))))));
    $('queue-empty').hidden = st.queue.length > 0;
    $('queue-count').textContent = String(st.queue.length);
    tick();
  }

  /** Waiting times and offer countdowns move every second between server updates. */
  function tick() {
    const elapsed = (Date.now() - st.queueAt) / 1000;
    for (const el of document.querySelectorAll('#queue .wait')) el.textContent = duration(Number(el.dataset.wait) + elapsed);
    for (const el of document.querySelectorAll('#offers .expires')) {
      const left = Math.max(0, (Number(el.dataset.expires) - Date.now()) / 1000);
      el.textContent = `expires in ${Math.ceil(left)} s`;
    }
  }

  function select(id, byUser) {
    const current = st.convs.get(st.selected);
    if (current) current.draft = $('reply').value;
    if (st.selected && st.selected !== id) stopTyping();
    st.selected = id;
    const c = st.convs.get(id);
    if (c) { c.unread = 0; $('reply').value = c.draft || ''; }
    if (byUser) clearAlerts();
    $('transfer-form').hidden = true;
    $('transfer-toggle').setAttribute('aria-expanded', 'false');
    render();
  }

  function renderChat() {
    const c = st.convs.get(st.selected);
    $('chat').hidden = !c;
    $('chat-empty').hidden = !!c;
    $('context').hidden = !c;
    if (!c) return;
    $('chat-title').textContent = `Customer ${short(c.id)}`;
    $('chat-sub').textContent = `${describe(c.ctx)} · ${c.ctx.priority} priority · waiting since ${clock(c.ctx.queued_at)}`;
    const skills = new Set([...DEFAULT_SKILLS, ...st.queue.map((q) => q.skill), ...(st.agent ? st.agent.skills : []).filter((s) => s !== '*')]);
    $('skills').replaceChildren(...[...skills].map((s) => h('option', { value: s })));
    renderTranscript();
    renderTyping();
    renderContext();
  }

  function renderTranscript() {
    const c = st.convs.get(st.selected);
    if (!c) return;
    const box = $('transcript');
    const stick = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    const items = [...c.msgs.values()].map((m) => ({ at: m.created_at, id: m.id, m }))
      .concat(c.notes.map((n, i) => ({ at: n.created_at, id: Infinity, i, n })))
      .sort((a, b) => a.at - b.at || a.id - b.id);
    const me = st.agent ? st.agent.display_name : '';
    box.replaceChildren(...items.map(({ m, n }) => {
      if (n) return h('div', { class: 'm note' }, h('span', { class: 'who' }, `Internal note · ${n.author} · ${clock(n.created_at)}`), h('div', { class: 'text' }, n.text));
      if (m.role === 'system') return h('div', { class: 'sysline', 'data-id': m.id }, m.text);
      const who = m.role === 'customer' ? 'Customer' : m.role === 'bot' ? 'Bot' : (m.author === me ? `${m.author} (you)` : m.author || 'Agent');
      const sources = m.role === 'bot' && m.meta && m.meta.sources && m.meta.sources.length
        ? h('span', { class: 'src' }, 'Sources: ' + m.meta.sources.map((s) => s.title).join(', ')) : null;
      return h('div', { class: 'm ' + m.role, 'data-id': m.id, 'data-role': m.role },
        h('span', { class: 'who' }, `${who} · ${clock(m.created_at)}`), h('div', { class: 'text' }, m.text), sources);
    }));
    if (stick) box.scrollTop = box.scrollHeight;
  }

  function renderTyping() {
    const c = st.convs.get(st.selected);
    $('customer-typing').textContent = c && c.typing ? 'The customer is typing…' : '';
  }

  function section(title, ...kids) {
    return h('section', {}, h('h3', {}, title), kids);
  }

  function renderContext() {
    const c = st.convs.get(st.selected);
    if (!c) return;
    const ctx = c.ctx;
    const parts = [];
    if (ctx.summary) parts.push(section('Summary', h('p', { class: 'summary' }, ctx.summary)));
    parts.push(section('Assistant', assistPanel(c)));

    const facts = [];
    if (ctx.intent) {
      facts.push(h('dt', {}, 'Intent'), h('dd', { class: 'intent' }, `${ctx.intent.name} · ${pct(ctx.intent.confidence)}`,
        h('meter', { min: '0', max: '1', value: String(ctx.intent.confidence), 'aria-label': 'Intent confidence' })));
    } else {
      facts.push(h('dt', {}, 'Intent'), h('dd', {}, 'none recognised'));
    }
    // Sentiment arrives with the sentiment model; until then these fields are empty.
    if (ctx.sentiment != null) {
      const s = ctx.sentiment;
      const score = s.scores && s.label ? s.scores[s.label] : s.score;
      const text = typeof s === 'object'
        ? [s.label, score != null ? pct(score) : null].filter(Boolean).join(' · ') || JSON.stringify(s)
        : String(s);
      facts.push(h('dt', {}, 'Sentiment'), h('dd', { class: 'sentiment ' + (s.label || '') }, text));
    }
    if (ctx.sentiment != null || ctx.frustration > 0) {
      facts.push(h('dt', {}, 'Frustration'), h('dd', { class: 'frustration' }, pct(ctx.frustration),
        h('meter', { min: '0', max: '1', low: '0.4', high: '0.7', optimum: '0', value: String(ctx.frustration), 'aria-label': 'Frustration' })));
    }
    facts.push(h('dt', {}, 'Team'), h('dd', {}, ctx.skill), h('dt', {}, 'Priority'), h('dd', {}, ctx.priority));
    if (ctx.reassignments > 0) facts.push(h('dt', {}, 'Reassigned'), h('dd', {}, `${ctx.reassignments}×`));
    if (ctx.contact_email) facts.push(h('dt', {}, 'Email'), h('dd', {}, ctx.contact_email));
    parts.push(section('Understanding', h('dl', { class: 'kv' }, facts)));
    const trend = moodTrend(ctx.mood || []);
    if (trend) parts.push(section('Mood, message by message', trend));

    parts.push(section('Why the bot handed over', h('div', { class: 'chips reasons' },
      (ctx.reasons || []).length ? ctx.reasons.map((r) => h('span', { class: 'chip', title: r }, REASONS[r] || r)) : h('span', { class: 'chip' }, 'not handed over by the bot'))));

    if (ctx.contact_note) parts.push(section('Message left while offline', h('p', {}, ctx.contact_note)));

    const knowledge = ctx.knowledge || [];
    parts.push(section('Suggested articles', knowledge.length ? knowledge.slice(0, 5).map((k) => {
      const heading = (k.heading_path || []).filter((x) => x !== k.title).slice(-1)[0];
      const label = heading ? `${k.title} — ${heading}` : k.title;
      const url = k.url && safeUrl(k.url);
      return h('div', { class: 'suggestion' },
        url ? h('a', { class: 'title', href: url, target: '_blank', rel: 'noopener noreferrer' }, label) : h('span', { class: 'title' }, label),
        h('span', { class: 'meta' }, `match ${pct(k.score)} · ${k.source}`),
        h('button', { type: 'button', class: 'ghost insert', 'aria-label': `Insert "${label}" into the reply`, onclick: () => insert(url ? `Here is our article "${label}": ${url}` : `Our help article "${label}" explains this.`) }, 'Insert'));
    }) : h('p', { class: 'empty-note' }, 'The bot found nothing for the latest message.')));

    parts.push(section('Internal notes', c.notes.length
      ? h('ul', { class: 'notes' }, c.notes.map((n) => h('li', {}, h('div', { class: 'by' }, `${n.author} · ${clock(n.created_at)}`), n.text)))
      : h('p', { class: 'empty-note' }, 'No notes yet. Notes are never shown to the customer.')));
    $('context').replaceChildren(...parts);
  }

  /** One bar per customer message (oldest first): how negative, how frustrated. */
  function moodTrend(mood) {
    const points = mood.filter((p) => p.negative != null || p.frustration != null);
    if (!points.length) return null;
    const NS = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(NS, 'svg');
    const width = 280;
    const height = 40;
    const step = Math.min(28, width / points.length);
    svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    svg.setAttribute('class', 'mood');
    svg.setAttribute('role', 'img');
    const describe = (p) => [p.negative != null ? `negative ${pct(p.negative)}` : null, p.frustration != null ? `frustration ${pct(p.frustration)}` : null].filter(Boolean).join(', ');
    svg.setAttribute('aria-label', 'Mood per customer message, oldest first: ' + points.map(describe).join('; '));
    points.forEach((p, i) => {
      const value = Math.max(p.negative || 0, p.frustration || 0);
      const bar = document.createElementNS(NS, 'rect');
      const barHeight = Math.max(2, value * height);
      bar.setAttribute('x', String(i * step + 2));
      bar.setAttribute('y', String(height - barHeight));
      bar.setAttribute('width', String(Math.max(2, step - 4)));
      bar.setAttribute('height', String(barHeight));
      bar.setAttribute('rx', '2');
      bar.setAttribute('class', value >= 0.7 ? 'bad' : value >= 0.4 ? 'warn' : 'ok');
      const title = document.createElementNS(NS, 'title');
      title.textContent = describe(p);
      bar.append(title);
      svg.append(bar);
    });
    return svg;
  }

  // The LLM's summary and drafted reply (POST .../assist). The draft goes into the reply box to
  // edit; it is never sent by itself.
  function assistPanel(c) {
    const a = c.assist;
    const button = h('button', { type: 'button', class: 'ghost', id: 'assist', onclick: () => askAssistant(c) },
      a && a.loading ? 'Asking…' : 'Draft a reply');
    if (a && a.loading) button.disabled = true;
    if (!a || a.loading) return button;
    if (a.unavailable) return h('div', {}, button, h('p', { class: 'empty-note' }, a.unavailable));
    return h('div', {}, button,
      a.summary ? h('p', { class: 'summary assist-summary' }, a.summary) : null,
      (a.sources || []).length ? h('p', { class: 'meta' }, 'Draft cites: ' + a.sources.map((s) => s.title).join('; ')) : null);
  }

  async function askAssistant(c) {
    c.assist = { loading: true };
    renderContext();
    try {
      const response = await api(`/v1/conversations/${encodeURIComponent(c.id)}/assist`, { method: 'POST' });
      const body = await response.json().catch(() => ({}));
      c.assist = response.ok ? body : { unavailable: (body.error && body.error.message) || 'The assistant is unavailable.' };
    } catch (err) {
      c.assist = { unavailable: 'The assistant is unavailable.' };
    }
    if (st.selected === c.id) {
      if (c.assist.draft) insert(c.assist.draft);
      renderContext();
    }
  }

  function insert(text) {
    const box = $('reply');
    setMode('reply');
    const before = box.value.slice(0, box.selectionStart);
    const glue = before && !/\s$/.test(before) ? ' ' : '';
    box.setRangeText(glue + text, box.selectionStart, box.selectionEnd, 'end');
    box.focus();
    box.dispatchEvent(new Event('input'));
  }

  // ---------------------------------------------------------------------------------------
  // Writing and acting

  function mode() { return document.querySelector('input[name="mode"]:checked').value; }
  function setMode(value) {
    document.querySelector(`input[name="mode"][value="${value}"]`).checked = true;
    applyMode();
  }
  function applyMode() {
    const note = mode() === 'note';
    $('composer').classList.toggle('note', note);
    $('reply').setAttribute('aria-label', note ? 'Internal note (never shown to the customer)' : 'Reply to the customer');
    $('reply').placeholder = note ? 'Write an internal note… (only agents see it)' : 'Write a reply… (Enter sends, Shift+Enter for a new line)';
    $('send').textContent = note ? 'Add note' : 'Send';
    if (note) stopTyping();
  }

  function submitReply(e) {
    if (e) e.preventDefault();
    const id = st.selected;
    const text = $('reply').value.trim();
    if (!id || !text) return;
    const ok = mode() === 'note'
      ? send({ type: 'note', conversation_id: id, text })
      : send({ type: 'message', conversation_id: id, text, client_message_id: 'c-' + rid() });
    if (!ok) return;
    stopTyping();
    $('reply').value = '';
    const c = st.convs.get(id);
    if (c) c.draft = '';
  }

  function agentTyping() {
    if (mode() !== 'reply' || !st.selected || !st.ready) return;
    if (!$('reply').value.trim()) { stopTyping(); return; }
    if (!st.typingSent) { send({ type: 'typing', conversation_id: st.selected, on: true }); st.typingSent = st.selected; }
    clearTimeout(st.typingTimer);
    st.typingTimer = setTimeout(stopTyping, 3000);
  }
  function stopTyping() {
    clearTimeout(st.typingTimer);
    if (st.typingSent && st.ready) st.ws.send(JSON.stringify({ type: 'typing', conversation_id: st.typingSent, on: false }));
    st.typingSent = false;
  }

  function transfer(e) {
    e.preventDefault();
    const target = $('transfer-target').value.trim();
    if (!st.selected || !target) return;
    const frame = { type: 'transfer', conversation_id: st.selected };
    frame[$('transfer-kind').value === 'agent' ? 'to_agent' : 'to_skill'] = target;
    const note = $('transfer-note').value.trim();
    if (note) frame.note = note;
    if (send(frame)) {
      $('transfer-form').hidden = true;
      $('transfer-toggle').setAttribute('aria-expanded', 'false');
      $('transfer-target').value = '';
      $('transfer-note').value = '';
    }
  }

  // ---------------------------------------------------------------------------------------
  // Wiring

  function init() {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', () => logout());
    document.addEventListener('pointerdown', unlockAudio);
    document.addEventListener('keydown', unlockAudio);
    for (const b of document.querySelectorAll('#presence button')) {
      b.addEventListener('click', () => send({ type: 'presence', status: b.dataset.status }));
    }
    $('composer').addEventListener('submit', submitReply);
    $('reply').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) submitReply(e);
    });
    $('reply').addEventListener('input', agentTyping);
    for (const r of document.querySelectorAll('input[name="mode"]')) r.addEventListener('change', applyMode);
    $('resolve').addEventListener('click', () => st.selected && send({ type: 'resolve', conversation_id: st.selected }));
    $('hand-back').addEventListener('click', () => st.selected && send({ type: 'hand_back', conversation_id: st.selected }));
    $('transfer-toggle').addEventListener('click', () => {
      const form = $('transfer-form');
      form.hidden = !form.hidden;
      $('transfer-toggle').setAttribute('aria-expanded', String(!form.hidden));
      if (!form.hidden) $('transfer-target').focus();
    });
    $('transfer-form').addEventListener('submit', transfer);
    window.addEventListener('focus', () => { if (st.selected) clearAlerts(); });
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && st.token && !st.ws) { st.attempt = 0; connect(); }
    });
    window.addEventListener('online', () => { if (st.token && !st.ws) { st.attempt = 0; connect(); } });
    setInterval(tick, 1000);
    // A socket silent for a minute is replaced; otherwise a ping every 25 s keeps it warm.
    setInterval(() => {
      if (!st.ws || !st.ready) return;
      if (Date.now() - st.lastFrameAt > 60000) { st.ws.close(); return; }
      st.ws.send('{"type":"ping"}');
    }, 25000);

    let saved = null;
    try { saved = JSON.parse(sessionStorage.getItem(SESSION)); } catch (_) { saved = null; }
    if (saved && saved.token) {
      st.token = saved.token;
      st.agent = saved.agent;
      showApp();
    } else {
      $('login-view').hidden = false;
      $('login-name').focus();
    }
  }

  init();
})();
