// The page of `moa serve`: every model of a run at work, the history, runs side by side.
//
// All model text is untrusted: it is only ever inserted as text (textContent, text nodes),
// never as HTML; the Markdown renderer builds DOM nodes itself. The page's CSP allows only
// this script.
"use strict";

const page = {
  key: sessionStorage.getItem("moa-key") || "",
  models: [],
};

// --- small DOM helpers -------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

// Model text may be in any script: each block of it takes the direction of its own first
// strong character (an Arabic answer reads right to left, an English one left to right).
function textIn(tag, className, text) {
  const node = el(tag, className, text);
  node.dir = "auto";
  return node;
}

// "Picked because ...": the server's sentence, the part of it that quotes a proposal's answer
// (`quote`, [start, end) in code points as the server's Python counts them) isolated, as
// model text in any script would reorder the English words around it.
function reasonLine(selection) {
  const line = el("p", "reason", "Picked because ");
  const chars = Array.from(selection.reason);
  const [start, end] = selection.quote || [chars.length, chars.length];
  line.append(chars.slice(0, start).join(""));
  if (end > start) line.append(textIn("bdi", null, chars.slice(start, end).join("")));
  line.append(chars.slice(end).join("") + (selection.note ? " (" + selection.note + ")" : ""));
  return line;
}

// aria-busy="true" on `node` while it is being written, no attribute once it is whole.
function busy(node, writing) {
  if (writing) node.setAttribute("aria-busy", "true");
  else node.removeAttribute("aria-busy");
}

function notice(message) {
  document.getElementById("notice").textContent = message || "";
}

// A control removed while it has the keyboard's focus leaves the focus on <body>, and the
// next Tab starts over from the top of the page: put it on `node` instead.
function keepFocus(node) {
  if (!document.activeElement || document.activeElement === document.body) node.focus();
}

function headers(json) {
  const h = {};
  if (page.key) h["Authorization"] = "Bearer " + page.key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

// `path` is relative ("v1/models"): under a proxy's path prefix (/moa/ui) it stays there.
async function api(path, options) {
  const opts = options || {};
  let response;
  try {
    response = await fetch(path, { ...opts, headers: headers(opts.body !== undefined) });
  } catch (error) {
    // The browser's own words ("Failed to fetch") name neither the problem nor the fix.
    if (error.name === "AbortError") throw error;
    throw new Error("The server could not be reached (" + error.message + "): check that moa serve still runs, then try again.");
  }
  if (response.status === 401) {
    document.getElementById("key-box").hidden = false;
    throw new Error("This server needs its API key: enter it above.");
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    let requestId = response.headers.get("X-Request-ID");
    try {
      const error = (await response.json()).error;
      message = error.message;
      requestId = error.request_id || requestId;
    } catch (e) { /* not an error body */ }
    const refusal = new Error(message);
    refusal.requestId = requestId;
    throw refusal;
  }
  return response;
}

// What the page tells a user whose question is too long for the models (`on_error`).
const TOO_LONG = "This question is too long for the models of this run: shorten it and ask again, " +
  "or re-ask it with a model that has a longer context window.";

// An error sentence with the ID the operator's log line ends with, so a user can name it.
function withRequest(message, requestId) {
  return requestId ? message + " (request " + requestId + ")" : message;
}

function modelSelect(selected) {
  const select = el("select");
  for (const name of page.models) {
    const option = el("option", null, name);
    option.value = name;
    if (name === selected) option.selected = true;
    select.appendChild(option);
  }
  return select;
}

// --- Markdown, built as DOM nodes (no HTML parsing of model text) -------------------------

const INLINE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\n]+\*)/g;

function inline(parent, text) {
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    if (match.index > last) parent.appendChild(document.createTextNode(text.slice(last, match.index)));
    const token = match[0];
    if (match[1]) parent.appendChild(el("code", null, token.slice(1, -1)));
    else if (match[2]) parent.appendChild(el("strong", null, token.slice(2, -2)));
    else parent.appendChild(el("em", null, token.slice(1, -1)));
    last = match.index + token.length;
  }
  if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
}

// The run's cost as its provenance line says it: dollars where every call is priced (local
// models cost nothing), the priced part and a count where some are not, "unknown" where none is;
// calls whose providers reported no usage are priced by their estimated tokens, and counted.
function costText(cost) {
  if (!cost || !cost.calls) return "";
  const known = cost.calls - cost.unpriced_calls;
  if (known === 0) return " · cost unknown (no prices; moa serve --prices)";
  const dollars = "$" + Number(cost.dollars).toFixed(cost.dollars >= 0.01 || cost.dollars === 0 ? 4 : 6);
  const estimated = cost.estimated_calls ? " (" + cost.estimated_calls + " calls estimated)" : "";
  return (cost.unpriced_calls ? " · cost " + dollars + " + " + cost.unpriced_calls + " unpriced calls" : " · cost " + dollars) + estimated;
}

function renderMarkdown(source) {
  const root = document.createDocumentFragment();
  const lines = source.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  let paragraph = [];
  const flush = () => {
    if (paragraph.length) {
      const p = textIn("p");
      inline(p, paragraph.join(" "));
      root.appendChild(p);
      paragraph = [];
    }
  };
  while (i < lines.length) {
    const line = lines[i];
    if (/^\s*```/.test(line)) {
      flush();
      const code = [];
      i += 1;
      while (i < lines.length && !/^\s*```/.test(lines[i])) code.push(lines[i++]);
      i += 1;
      const pre = el("pre");
      pre.appendChild(el("code", null, code.join("\n")));
      root.appendChild(pre);
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (heading) {
      flush();
      const h = textIn("h" + Math.min(heading[1].length + 2, 6));
      inline(h, heading[2]);
      root.appendChild(h);
      i += 1;
      continue;
    }
    const item = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(line);
    if (item) {
      flush();
      const ordered = /\d/.test(item[1]);
      const list = el(ordered ? "ol" : "ul");
      while (i < lines.length) {
        const m = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(lines[i]);
        if (!m || /\d/.test(m[1]) !== ordered) break;
        const li = textIn("li");
        inline(li, m[2]);
        list.appendChild(li);
        i += 1;
      }
      root.appendChild(list);
      continue;
    }
    if (!line.trim()) flush();
    else paragraph.push(line.trim());
    i += 1;
  }
  flush();
  return root;
}

// The answer as plain text with the spans shared with one reference marked. The spans count
// Unicode code points (as the server's Python does), not JavaScript's UTF-16 units: an emoji
// before a span would otherwise shift the marks.
function markedText(text, spans) {
  const root = document.createDocumentFragment();
  const chars = Array.from(text);
  const part = (start, end) => chars.slice(start, end).join("");
  let last = 0;
  for (const [start, end] of spans) {
    if (start > last) root.appendChild(document.createTextNode(part(last, start)));
    root.appendChild(el("mark", null, part(start, end)));
    last = end;
  }
  if (last < chars.length) root.appendChild(document.createTextNode(part(last)));
  return root;
}

// --- one run, drawn from its events ------------------------------------------------------

// Tokens come much faster than the screen is drawn: each one only joins its element's
// queue, and once a frame each element gets what came as one text node appended. Rewriting
// the whole answer on every token took time quadratic in its length; this stays linear.
class TextQueue {
  constructor() {
    this.pending = new Map();
    this.frame = null;
  }

  add(node, text) {
    const parts = this.pending.get(node);
    if (parts) parts.push(text);
    else this.pending.set(node, [text]);
    if (this.frame === null) this.frame = requestAnimationFrame(() => this.flush());
  }

  // Forget what was queued for `node`, whose text is cleared.
  drop(node) {
    this.pending.delete(node);
  }

  // Append what was queued now (before any other event changes the elements).
  flush() {
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    this.frame = null;
    for (const [node, parts] of this.pending) node.appendChild(document.createTextNode(parts.join("")));
    this.pending.clear();
  }
}

// A reasoning model's leading <think> block, dropped from the answer as it streams, by the
// package's own rule (ThinkingCut in text/_thinking.py, which the answer event's text
// follows): only a block that opens the text counts; text that may still be the start of
// "<think>" is held; the block goes up to its closing tag, and the whitespace after it.
// The call's card shows the thinking: the answer box is the answer only. A block that never
// closed is held whole: where its part's finish_reason says the model stopped itself (said,
// and not "length" or "max_tokens", nor a stop to call tools, whose block is its thinking)
// and none of its tokens carried a tool call (tool_calls: Gemini says STOP with its calls),
// it is the answer's own text and is shown at the part's end (kept_whole in run/_accounting.py).
const THINK_OPEN = "<think>";
const THINK_CLOSE = "</think>";
const CUT_OFF_REASONS = new Set(["length", "max_tokens"]);
const TOOL_CALL_REASONS = new Set(["function_call", "tool_calls", "tool_use"]);
// Python's str.lstrip() whitespace: trimStart() keeps U+001C-U+001F and U+0085, drops U+FEFF.
const LEADING_SPACE = /^[\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;

function keepsBlock(reason) {
  if (typeof reason !== "string" || reason === "") return false;
  const said = reason.toLowerCase();
  return !CUT_OFF_REASONS.has(said) && !TOOL_CALL_REASONS.has(said);
}

class ThinkingCut {
  constructor() {
    this.pending = "";
    this.block = ""; // the text as it came, while it is or may be a block not closed
    this.state = "start"; // then "thinking", "after" (the block closed) or "answer"
  }

  // What of `text` belongs to the answer and can be shown now.
  take(text) {
    if (this.state === "answer" || !text) return text;
    this.pending += text;
    if (this.state !== "after") this.block += text;
    if (this.state === "start") {
      const head = this.pending.replace(LEADING_SPACE, "");
      if (THINK_OPEN.startsWith(head) && head !== THINK_OPEN) return ""; // may still open one
      if (!head.startsWith(THINK_OPEN)) {
        this.state = "answer";
        const out = this.pending;
        this.pending = "";
        this.block = "";
        return out;
      }
      this.state = "thinking";
      this.pending = head.slice(THINK_OPEN.length);
    }
    if (this.state === "thinking") {
      const end = this.pending.indexOf(THINK_CLOSE);
      if (end < 0) { // keep only what may be the closing tag's start
        this.pending = this.pending.slice(-(THINK_CLOSE.length - 1));
        return "";
      }
      this.state = "after";
      this.pending = this.pending.slice(end + THINK_CLOSE.length);
      this.block = "";
    }
    const out = this.pending.replace(LEADING_SPACE, "");
    if (out) {
      this.state = "answer";
      this.pending = "";
    }
    return out;
  }

  // Held text the stream's end releases: a short answer that could have opened a block,
  // and where `stopped` (the model ended the part itself) a block that never closed, whole.
  finish(stopped = false) {
    const out = this.state === "start" || (stopped && this.state === "thinking") ? this.block : "";
    this.pending = "";
    this.block = "";
    return out;
  }
}

function callKey(ev) {
  return [ev.role, ev.layer, ev.proposer, ev.sample].join(":");
}

function callName(role, proposer, sample) {
  if (role !== "proposer") return role;
  return "proposer " + (proposer + 1) + (sample ? " #" + (sample + 1) : "");
}

class Pane {
  static count = 0;

  constructor(onReask) {
    this.root = el("section", "pane");
    const head = el("div", "pane-head");
    // The run's title is a heading under the page's (a screen reader lists and jumps by
    // them); its state line is a polite live region: it is read out as it changes (starting,
    // running, how the run ended), while the cards and the answer, written token by token,
    // are not live, so that nobody hears every token.
    this.title = textIn("span", "pane-title", "new run"); // a system's name, in any script
    this.title.setAttribute("role", "heading");
    this.title.setAttribute("aria-level", "2");
    this.title.tabIndex = -1; // where the focus goes when the control that had it went away
    // The pane is a region named by its title: a landmark to jump to, a run beside another.
    this.title.id = "pane-title-" + Pane.count++;
    this.root.setAttribute("aria-labelledby", this.title.id);
    this.status = el("span", "pane-status", "");
    this.status.setAttribute("role", "status");
    this.reask = el("span", "reask");
    head.append(this.title, this.status, this.reask);
    this.question = textIn("div", "pane-question");
    this.layers = el("div", "layers");
    this.final = el("div", "final-step");
    this.errorBox = el("div", "pane-error"); // an alert in a live run (startRun)
    // A note beside the error, read out politely: in the alert it read the error out again.
    this.note = el("div", "pane-note");
    this.note.setAttribute("role", "status");
    this.answer = textIn("div", "answer");
    this.provenance = el("div", "provenance");
    this.root.append(head, this.question, this.layers, this.final, this.errorBox, this.note, this.answer, this.provenance);
    this.root.pane = this;
    this.ended = false;
    this.controller = new AbortController();
    this.cards = new Map();
    this.rows = new Map();
    this.answerText = "";
    this.thinking = new ThinkingCut();
    this.partStopped = false; // the answer part's finish_reason said its model stopped itself
    this.partCalled = false; // a token of the answer part carried a tool call
    this.typed = new TextQueue();
    this.onReask = onReask;
  }

  row(ev) {
    const id = ev.layer + ":" + (ev.role === "proposer" ? "p" : "a");
    let row = this.rows.get(id);
    if (!row) {
      row = el("div", "layer");
      row.dataset.layer = ev.layer;
      const label = ev.role === "proposer" ? "Layer " + ev.layer + " · proposers" : "Layer " + ev.layer + " · " + ev.role;
      row.appendChild(el("h3", null, label));
      row.cards = el("div", "cards");
      row.appendChild(row.cards);
      this.rows.set(id, row);
      this.layers.appendChild(row);
    }
    return row;
  }

  card(ev) {
    const key = callKey(ev);
    let card = this.cards.get(key);
    if (!card) {
      card = el("article", "card");
      card.dataset.key = key;
      card.dataset.role = ev.role;
      const head = el("div", "card-head");
      card.nameEl = el("span", "card-name", callName(ev.role, ev.proposer, ev.sample));
      card.statusEl = el("span", "status");
      this.setStatus(card, "running");
      head.append(card.nameEl, card.statusEl);
      card.modelEl = el("div", "model", ev.configured_model || "");
      card.statsEl = el("div", "stats", "");
      card.errorEl = el("div", "error", "");
      card.textEl = textIn("div", "text", "");
      card.overlapEl = el("div", "overlap", "");
      card.append(head, card.modelEl, card.statsEl, card.errorEl, card.textEl, card.overlapEl);
      card.attempts = 0;
      this.row(ev).cards.appendChild(card);
      this.cards.set(key, card);
    }
    return card;
  }

  // A running card is aria-busy: a screen reader that reaches it is told its text is not
  // all there yet (nothing is read out as it grows; the pane's state line is the live part).
  setStatus(card, status, label) {
    card.dataset.status = status;
    card.statusEl.textContent = label || status;
    busy(card, status === "running");
  }

  apply(ev) {
    if (ev.event !== "token") this.typed.flush(); // every other event sees all text so far
    const handler = this["on_" + ev.event];
    if (handler) handler.call(this, ev);
  }

  on_run(ev) {
    this.run = ev;
    this.title.textContent = ev.model;
    this.root.dataset.model = ev.model;
    this.root.dataset.runId = ev.run_id;
    this.question.textContent = ev.question;
    this.status.textContent = ev.variant + " · running";
  }

  on_started(ev) {
    const card = this.card(ev);
    if (callKey(ev) === this.answerKey) this.resetAnswer(); // the answer's call is retried
    card.attempts += 1;
    card.textEl.textContent = "";
    card.errorEl.textContent = "";
    this.setStatus(card, "running", card.attempts > 1 ? "retry " + (card.attempts - 1) : "running");
  }

  on_token(ev) {
    const card = this.card(ev);
    this.typed.add(card.textEl, ev.text);
    if (ev.final) {
      // A fallback aggregator writes the answer afresh: what a failed one wrote goes.
      if (callKey(ev) !== this.answerKey) this.resetAnswer(callKey(ev));
      if (ev.part !== this.answerPart) { // a chunk-wise answer's next part thinks afresh
        // What the last part's cut held is answer (its block too, where its model stopped).
        this.typeAnswer(this.thinking.finish(this.partStopped && !this.partCalled));
        this.thinking = new ThinkingCut();
        this.answerPart = ev.part;
        this.partStopped = false;
        this.partCalled = false;
      }
      this.typeAnswer(this.thinking.take(ev.text));
      if (ev.finish_reason) this.partStopped = keepsBlock(ev.finish_reason); // the part's end
      if (ev.tool_calls) this.partCalled = true;
      busy(this.answer, true); // until the answer comes whole, or the run ends
    }
  }

  // Type out `text` as the answer's (what the answer's cut of its call's tokens gives out).
  typeAnswer(text) {
    if (!text) return;
    this.answerText += text;
    this.typed.add(this.answer, text);
  }

  resetAnswer(key) {
    if (key !== undefined) this.answerKey = key;
    this.answerText = "";
    this.thinking = new ThinkingCut();
    this.partStopped = false;
    this.partCalled = false;
    this.typed.drop(this.answer);
    this.answer.textContent = "";
  }

  on_finished(ev) {
    const card = this.card(ev);
    const cut = ev.finish_reason === "length" ? " (cut off at max_tokens)" : "";
    this.setStatus(card, "done", (ev.cached ? "done (cached)" : "done") + cut);
    if (ev.model) card.modelEl.textContent = ev.model;
    const retries = ev.retries ? " · " + ev.retries + " retries" : "";
    const estimated = ev.usage_estimated ? " (estimated: no usage reported)" : "";
    card.statsEl.textContent = ev.latency_s.toFixed(2) + " s · " + ev.prompt_tokens + " + " +
      ev.completion_tokens + " tokens" + estimated + retries;
  }

  on_failed(ev) {
    const card = this.card(ev);
    this.setStatus(card, ev.status || "failed");
    card.errorEl.textContent = ev.error.split("\n")[0];
    card.statsEl.textContent = ev.retries ? ev.retries + " retries" : "no retry";
  }

  on_selected(ev) {
    this.renderTally(ev, null);
  }

  on_budget_spent(ev) {
    this.final.appendChild(el("p", "fallback", "Token budget spent: " + ev.used + " of " + ev.limit));
  }

  renderTally(selection, groups) {
    this.final.textContent = "";
    const box = el("div", "tally");
    box.appendChild(el("h3", null, "Selection · " + selection.method));
    const table = el("table");
    const head = el("tr");
    for (const name of ["answer", "votes", "weight", "proposals"]) head.appendChild(el("th", null, name));
    table.appendChild(head);
    const entries = groups || selection.tally || [];
    entries.forEach((entry, index) => {
      const tr = el("tr");
      const members = entry.proposals || (entry.proposal !== undefined ? [entry.proposal] : []);
      const picked = members.includes(selection.winner);
      if (picked) tr.className = "picked";
      const answer = entry.answer !== undefined ? entry.answer : "proposal " + (entry.proposal + 1);
      // The answer is model text in its own direction, isolated from the page's words.
      const cell = el("td");
      cell.append(textIn("bdi", null, answer === "" ? "(no answer)" : answer), picked ? " (picked)" : "");
      tr.appendChild(cell);
      tr.appendChild(el("td", null, entry.votes !== undefined ? entry.votes : entry.samples || ""));
      const weight = entry.weight !== undefined ? entry.weight : entry.agreement !== undefined ? entry.agreement : entry.mean_similarity;
      tr.appendChild(el("td", null, weight !== undefined ? Number(weight).toFixed(2) : ""));
      const names = (entry.calls || []).map((c) => "L" + c[1] + " " + callName(c[0], c[2], c[3]));
      tr.appendChild(el("td", null, names.length ? names.join(", ") : members.map((m) => "#" + (m + 1)).join(", ")));
      table.appendChild(tr);
      if (groups && entry.calls && entry.calls.length > 1) {
        const hue = (index * 137) % 360;
        for (const c of entry.calls) {
          const card = this.cards.get(c.join(":"));
          if (card) {
            card.classList.add("agree");
            card.style.setProperty("--agree-hue", String(hue)); // its tone: style.css
            // The ring's colour tells the groups apart only where colours show (not to a
            // screen reader, nor under forced colours): the card names the calls it agrees with.
            const others = entry.calls.filter((o) => o !== c).map((o) =>
              (o[1] === c[1] ? "" : "L" + o[1] + " ") + callName(o[0], o[2], o[3]));
            card.overlapEl.textContent = "agrees with " + others.join(", ");
          }
        }
      }
    });
    box.appendChild(table);
    box.appendChild(reasonLine(selection));
    this.final.appendChild(box);
  }

  on_answer(ev) {
    busy(this.answer, false);
    this.answerText = ev.text;
    this.thinking = new ThinkingCut(); // the answer is whole: nothing is held any more
    this.answer.textContent = "";
    this.answer.appendChild(renderMarkdown(ev.text));
    for (const skipped of ev.failed_layers || []) {
      this.answer.prepend(el("p", "fallback", "Degraded answer: every proposal of layer " + skipped.layer +
        " failed and it was passed over (fewer layers than configured ran)."));
    }
    if (ev.finish_reason === "length") {
      this.answer.prepend(el("p", "fallback", "Cut-off answer: it reached its max_tokens and may end mid-sentence."));
    }
    if (ev.incomplete_call) {
      this.answer.prepend(el("p", "fallback", "Degraded answer: it " + ev.incomplete_call + " (no whole call was there instead)."));
    }
    if (ev.fallback) {
      this.answer.prepend(el("p", "fallback", "Degraded answer (" + ev.fallback + "): " + (ev.fallback_reason || "")));
    }
    const u = ev.usage || {};
    this.provenance.textContent = "answered by " + ev.answered_by + " · " + u.calls + " calls (" +
      (u.failed || 0) + " failed) · " + u.prompt_tokens + " prompt + " + u.completion_tokens +
      " completion tokens" + (u.estimated_calls ? " (" + u.estimated_calls + " calls estimated: no usage reported)" : "") +
      " · critical path " + Number(u.critical_path_s).toFixed(2) + " s" +
      costText(ev.cost);
    if (ev.selection) {
      this.renderTally(ev.selection, ev.selection.groups);
      const winner = ev.selection.winner_call;
      if (winner) {
        const card = this.cards.get(["proposer", winner.layer, winner.proposer, winner.sample].join(":"));
        if (card) this.markWinner(card);
      }
    }
    if (ev.ranker) {
      this.final.textContent = "";
      const box = el("div", "ranker");
      box.appendChild(el("h3", null, "Ranker"));
      const picked = ev.ranker.choice ? "picked response " + ev.ranker.choice :
        "named no response; the first one was returned";
      const reason = el("p", "reason", "The ranker " + picked + ". Its reply: ");
      reason.appendChild(textIn("bdi", null, ev.ranker.reply));
      box.appendChild(reason);
      this.final.appendChild(box);
      const card = ev.ranker.call && this.cards.get(ev.ranker.call.join(":"));
      if (card) this.markWinner(card);
    }
    for (const ref of ev.agreement || []) {
      const card = this.cards.get(ref.call.join(":"));
      if (!card) continue;
      const show = el("button", "show-overlap", Math.round(ref.share * 100) + "% of the answer shared · show");
      show.type = "button";
      show.title = "Mark the answer's spans that share 4+ words with this proposal";
      card.overlapEl.textContent = "";
      card.overlapEl.appendChild(show);
      show.onclick = () => {
        this.answer.textContent = "";
        this.answer.appendChild(markedText(this.answerText, ref.spans));
        const back = el("button", null, "show formatted");
        back.onclick = () => {
          this.answer.textContent = "";
          this.answer.appendChild(renderMarkdown(this.answerText));
          keepFocus(show); // the button that had the focus is gone: back to the one that marked
        };
        this.answer.prepend(back);
      };
    }
  }

  // The picked call's card: outlined, and said in words (the outline is only a colour
  // beside the rings of the cards that agree).
  markWinner(card) {
    card.classList.add("winner");
    card.statusEl.textContent += " · picked";
  }

  on_error(ev) {
    this.errorBox.textContent = withRequest(ev.message, ev.request_id);
    // The server's sentence speaks to an API client ("drop the oldest turns"); the page
    // sends one question, so its fix is said here, told apart by the error's reason.
    if (ev.reason === "context_length_exceeded") this.note.append(el("p", "too-long", TOO_LONG));
    this.markIncomplete();
  }

  // What the answer's call wrote before the run failed stays, but not as if it were the answer.
  markIncomplete() {
    this.typeAnswer(this.thinking.finish(this.partStopped && !this.partCalled));
    this.typed.flush();
    if (this.answerText && !this.answer.querySelector(".fallback")) {
      this.answer.prepend(el("p", "fallback", "Incomplete answer: the run stopped before it was written out."));
    }
  }

  // The event stream ended without the run's 'done': say so where the run is shown, and leave
  // no call looking as if it still ran (the server stops a run whose client is gone).
  disconnected(why) {
    this.finish("disconnected");
    this.errorBox.textContent = "The connection to the server ended before the run finished (" + why +
      "); reopen the run from the history to see what the server kept.";
    for (const card of this.cards.values()) {
      if (card.dataset.status === "running") this.setStatus(card, "cancelled", "connection lost");
    }
    this.markIncomplete();
  }

  // Close this pane's event stream: the server then cancels the run's calls.
  stop() {
    this.ended = true;
    this.controller.abort();
  }

  on_done(ev) {
    this.finish(ev.status);
    // The server answered but could not save the run: said here, not by its absence later.
    if (ev.kept === false) {
      this.note.append(el("p", "not-kept",
        "The server could not keep this run in its history, so it will not be listed there; the server's log says why."));
    }
    this.showReask();
  }

  // The run is over for this pane: what is typed out so far is shown, and its status says how.
  finish(status) {
    this.typed.flush();
    busy(this.answer, false);
    this.ended = true;
    this.root.dataset.done = status;
    this.status.textContent = (this.run ? this.run.variant + " · " : "") + status;
  }

  showReask() {
    if (!this.run || !this.onReask) return;
    this.reask.textContent = "";
    const select = modelSelect(page.models.find((m) => m !== this.run.model));
    select.setAttribute("aria-label", "Model to re-ask this question with");
    const button = el("button", "reask-button", "Re-ask side by side");
    button.type = "button";
    button.onclick = () => this.onReask(this.run.question, select.value);
    this.reask.append(select, button);
  }
}

// --- running and reopening ---------------------------------------------------------------

const panes = document.getElementById("panes");

// A pane that leaves the page stops its run, if it still streams: nobody would see the rest.
function dropPane(root) {
  if (root.pane) root.pane.stop();
  panes.removeChild(root);
}

function newPane(sideBySide) {
  if (!sideBySide) while (panes.firstChild) dropPane(panes.firstChild);
  while (panes.children.length >= 2) dropPane(panes.firstChild);
  const pane = new Pane((question, model) => startRun(question, model, true));
  panes.appendChild(pane.root);
  keepFocus(pane.title); // a re-ask of the pane just pushed out had the focus
  return pane;
}

// The models the operator allows besides the presets' own (the server checks them).
function modelOverrides() {
  const out = {};
  const proposers = document.getElementById("proposers").value.split(",").map((p) => p.trim()).filter(Boolean);
  const aggregator = document.getElementById("aggregator").value.trim();
  if (proposers.length) out.proposers = proposers;
  if (aggregator) out.aggregator = aggregator;
  return out;
}

async function startRun(question, model, sideBySide) {
  notice("");
  const pane = newPane(sideBySide);
  // Why this run failed is read out when it shows; a run reopened from the history is no
  // alert (its old error would be read out as if it had just failed).
  pane.errorBox.setAttribute("role", "alert");
  pane.question.textContent = question;
  pane.title.textContent = model;
  pane.status.textContent = "starting";
  const body = { model: model, messages: [{ role: "user", content: question }], ...modelOverrides() };
  const signal = pane.controller.signal;
  let response;
  try {
    response = await api("v1/moa/runs", { method: "POST", body: JSON.stringify(body), signal: signal });
  } catch (error) {
    if (signal.aborted) return;
    pane.errorBox.textContent = withRequest(error.message, error.requestId); // the server's refusal
    pane.status.textContent = "failed";
    return;
  }
  let why = "the stream closed";
  try {
    await readEvents(response, pane);
  } catch (error) {
    why = error.message;
  }
  if (signal.aborted) return; // the pane was replaced: its run was stopped on purpose
  if (!pane.ended) {
    pane.stop(); // a page error mid-stream: do not leave the run going on for nobody
    pane.disconnected(why);
  }
  loadHistory();
}

// Apply each server-sent event of `response` to `pane` until the stream ends.
async function readEvents(response, pane) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data) pane.apply(JSON.parse(data));
    }
  }
}

async function openRun(id, sideBySide) {
  try {
    const run = await (await api("v1/moa/runs/" + encodeURIComponent(id))).json();
    const pane = newPane(sideBySide);
    for (const ev of run.events) pane.apply(ev);
    pane.on_done({ status: run.status });
  } catch (error) {
    notice(error.message);
  }
}

// A history button's name for a screen reader: its word, then its run's question (cut), as
// a list of runs read as a column of identical "open" and "side by side" buttons. Cut between
// characters as drawn (graphemes): a cut by UTF-16 units split an emoji into a lone surrogate
// or a family into its first member. One Segmenter serves every name, and a question of
// no more UTF-16 units than the limit has no more characters either: it is not split.
const SPOKEN_CHARS = 100;
const GRAPHEMES = typeof Intl.Segmenter === "function" ? new Intl.Segmenter() : null;

function spoken(question) {
  const words = String(question || "").split(/\s+/).join(" ").trim();
  if (words.length <= SPOKEN_CHARS) return words;
  const drawn = GRAPHEMES
    ? Array.from(GRAPHEMES.segment(words), (s) => s.segment)
    : Array.from(words); // code points at least: never half a surrogate pair
  return drawn.length > SPOKEN_CHARS
    ? drawn.slice(0, SPOKEN_CHARS - 1).join("").trimEnd() + "…"
    : words;
}

async function loadHistory() {
  const list = document.getElementById("history-list");
  try {
    const answer = await (await api("v1/moa/runs")).json();
    const runs = answer.data;
    // A server that keeps none says so ("history": false): an empty list alone read as a
    // history with no run yet, and each run vanished from the page unsaid.
    document.getElementById("history-off").hidden = answer.history !== false;
    // The list is drawn afresh: a button of it that had the focus gets it back.
    const had = list.contains(document.activeElement) ? document.activeElement : null;
    const hadRun = had && had.closest("li").dataset.runId;
    list.textContent = "";
    for (const run of runs) {
      const li = el("li", "history-item");
      li.dataset.runId = run.id;
      li.appendChild(textIn("span", "h-question", run.question));
      // The model's name is isolated: one in Arabic ("...-2") took the dots and digits after it
      // into its run and read them in the wrong order.
      const meta = el("span", "h-meta");
      meta.append(textIn("bdi", null, run.model), " · " + run.status + " · " + new Date(run.created * 1000).toLocaleString());
      li.appendChild(meta);
      const actions = el("div", "h-actions");
      const open = el("button", "h-open", "open");
      open.type = "button";
      open.setAttribute("aria-label", "open: " + spoken(run.question));
      open.onclick = () => openRun(run.id, false);
      const compare = el("button", "h-compare", "side by side");
      compare.type = "button";
      compare.setAttribute("aria-label", "side by side: " + spoken(run.question));
      compare.onclick = () => openRun(run.id, true);
      actions.append(open, compare);
      li.appendChild(actions);
      list.appendChild(li);
    }
    const item = had && [...list.children].find((li) => li.dataset.runId === hadRun);
    const again = item && item.querySelector("." + had.className);
    if (again) keepFocus(again);
  } catch (error) {
    notice(error.message);
  }
}

async function loadModels() {
  try {
    const models = (await (await api("v1/models")).json()).data;
    page.models = models.map((m) => m.id);
    const select = document.getElementById("preset");
    select.textContent = "";
    for (const name of page.models) {
      const option = el("option", null, name);
      option.value = name;
      select.appendChild(option);
    }
    loadHistory();
  } catch (error) {
    notice(error.message);
  }
}

document.getElementById("ask").addEventListener("submit", (event) => {
  event.preventDefault();
  const question = document.getElementById("question").value.trim();
  const model = document.getElementById("preset").value;
  if (!question) return notice("Type a question first.");
  if (!model) return notice("No served model: start moa serve with a preset.");
  startRun(question, model, false);
});

// Enter writes a new line in the question; Ctrl+Enter (Cmd+Enter on a Mac) asks it, from
// the other models' fields too (outside the form, where Enter alone submits nothing).
for (const id of ["question", "proposers", "aggregator"]) {
  document.getElementById(id).addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      document.getElementById("ask").requestSubmit();
    }
  });
}

// A form, so that Enter in the key's field uses it as the button does.
document.getElementById("key-box").addEventListener("submit", (event) => {
  event.preventDefault();
  page.key = document.getElementById("api-key").value;
  sessionStorage.setItem("moa-key", page.key);
  document.getElementById("key-box").hidden = true;
  loadModels();
});

loadModels();
