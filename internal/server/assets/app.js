// scopectl serve: the page. Plain DOM (no innerHTML of data), Chart.js for charts,
// polling with offsets (GPU since t, loss since step), logs by server-sent events that
// resume at their byte offset (EventSource sends the last id back on a reconnect).
"use strict";
(function () {
  const $ = (s, el) => (el || document).querySelector(s);
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of kids.flat()) if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
    return el;
  }
  const state = { view: "library", session: null, libAfter: "", libItems: [], libSel: null, podSel: null,
    jobSel: null, charts: {}, gpuSince: {}, gpuData: {}, loss: null, jobKey: "", streams: {}, frames: {} };

  // ---- formatting
  const fmtBytes = n => { if (!n) return "0 B"; const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return (i ? n.toFixed(1) : n) + " " + u[i]; };
  const fmtDur = s => { if (s == null || !isFinite(s)) return "–"; s = Math.max(0, Math.round(s)); const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), x = s % 60; return h ? `${h}h ${m}m` : m ? (x ? `${m}m ${x}s` : `${m}m`) : `${x}s`; };
  const fmtUSD = v => "$" + (v || 0).toFixed(2);
  const fmtAgo = t => { if (!t) return "–"; const d = (Date.now() - new Date(t)) / 1000; return d < 90 ? "just now" : d < 5400 ? Math.round(d / 60) + " min ago" : d < 172800 ? Math.round(d / 3600) + " h ago" : new Date(t).toLocaleDateString(); };
  const statusClass = s => ({ RUNNING: "ok", EXITED: "warn", CREATED: "warn", TERMINATED: "bad", done: "ok", training: "ok", running: "ok", failed: "bad", stopped: "warn", stopping: "warn" }[s] || "");

  // ---- API
  async function api(path, opts) {
    const o = Object.assign({ headers: {}, credentials: "same-origin" }, opts || {});
    if (o.body && typeof o.body !== "string") { o.body = JSON.stringify(o.body); o.headers["Content-Type"] = "application/json"; }
    const r = await fetch(path, o);
    let j = null;
    try { j = await r.json(); } catch (e) { /* not JSON */ }
    if (!r.ok) throw new Error((j && j.error) || r.status + " " + r.statusText);
    $("#live").classList.remove("stale");
    return j;
  }
  function toast(msg, bad) {
    const t = $("#toast"); t.textContent = msg; t.className = "toast" + (bad ? " bad" : "");
    clearTimeout(toast.t); toast.t = setTimeout(() => t.classList.add("hidden"), 4500);
  }
  function dialog(title, text, body, okText, danger) {
    const d = $("#dlg"); $("#dlg-title").textContent = title; $("#dlg-text").textContent = text;
    const b = $("#dlg-body"); b.replaceChildren(...(body ? [body] : []));
    const ok = $("#dlg-ok"); ok.textContent = okText || "OK"; ok.className = "btn primary" + (danger ? " danger" : "");
    return new Promise(res => { d.onclose = () => res(d.returnValue === "ok"); d.showModal(); const f = b.querySelector("input"); if (f) f.focus(); });
  }
  async function ensureLogin() {
    if (state.session && state.session.authorized) return true;
    const inp = h("input", { class: "input", type: "password", id: "token-input", placeholder: "token", autocomplete: "current-password" });
    const ok = await dialog("Log in", "Actions need the serve token (scopectl serve prints where it is kept).", inp, "Log in");
    if (!ok) return false;
    try { state.session = await api("/login", { method: "POST", body: { token: inp.value } }); renderSession(); return true; }
    catch (e) { toast(e.message, true); return false; }
  }
  async function act(label, path, body, method, said) {
    if (!(await ensureLogin())) return null;
    try { const r = await api(path, { method: method || "POST", body: body || {} }); toast(label + ": " + (said || "done")); return r; }
    catch (e) { toast(label + ": " + e.message, true); return null; }
  }

  // ---- live logs: one EventSource per log pane; lines are appended, the pane keeps the
  // last ~300 kB; the server resumes after the last id it sent when the browser reconnects.
  function stream(key, url, pre, stateEl) {
    const old = state.streams[key];
    if (old && old.url === url) return;
    if (old) old.es.close();
    pre.textContent = "";
    const es = new EventSource(url);
    state.streams[key] = { es, url };
    const mark = (t, cls) => { if (stateEl) { stateEl.textContent = t; stateEl.className = "pill " + cls; } };
    es.onopen = () => mark("live", "ok");
    es.onerror = () => mark(es.readyState === EventSource.CLOSED ? "closed" : "reconnecting…", "warn");
    es.addEventListener("lines", ev => {
      const d = JSON.parse(ev.data);
      const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
      pre.append(d.lines.join("\n") + "\n");
      if (pre.textContent.length > 400000) pre.textContent = pre.textContent.slice(-300000);
      if (stick) pre.scrollTop = pre.scrollHeight;
      mark("live", "ok");
    });
    es.addEventListener("reset", () => pre.append(h("span", { class: "reset" }, "— the log was replaced; from its start —\n")));
    es.addEventListener("problem", ev => mark(JSON.parse(ev.data).error, "bad"));
    es.addEventListener("end", () => { es.close(); mark("ended", ""); });
  }
  function closeStream(key) { const o = state.streams[key]; if (o) { o.es.close(); delete state.streams[key]; } }
  function renderSession() {
    const s = state.session || {};
    $("#version").textContent = s.version ? "v" + s.version : "";
    const b = $("#login-btn"); b.textContent = s.authorized ? "Log out" : "Log in";
  }

  // ---- charts
  const css = v => getComputedStyle(document.documentElement).getPropertyValue(v).trim();
  const palette = ["#3b6df0", "#e8590c", "#2f9e44", "#ae3ec9", "#f08c00", "#1098ad"];
  function chart(key, canvas, cfg) {
    const old = state.charts[key];
    if (old && old.canvas === canvas) return old;
    if (old) old.destroy();
    if (!window.Chart) return null;
    Chart.defaults.color = css("--muted"); Chart.defaults.borderColor = css("--line"); Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    const c = new Chart(canvas, cfg); state.charts[key] = c; return c;
  }
  const lineOpts = (y) => ({ animation: false, responsive: true, maintainAspectRatio: false, parsing: false, normalized: true,
    interaction: { mode: "nearest", axis: "x", intersect: false }, plugins: { legend: { labels: { boxWidth: 10 } }, decimation: { enabled: true, algorithm: "lttb", samples: 600 } },
    scales: { x: { type: "linear", ticks: { maxTicksLimit: 8 } }, y: Object.assign({ beginAtZero: false }, y || {}) } });

  // ---- library
  async function loadLibrary(reset) {
    if (reset) { state.libAfter = ""; state.libItems = []; }
    const q = new URLSearchParams({ limit: "100" });
    if (state.libAfter) q.set("after", state.libAfter);
    const f = $("#lib-filter").value.trim(); if (f) q.set("name", f);
    const b = $("#lib-base").value; if (b) q.set("base", b);
    const r = await api("/api/v1/loras?" + q);
    state.libItems = state.libItems.concat(r.items); state.libAfter = r.next || "";
    $("#lib-more").classList.toggle("hidden", !r.next);
    $("#lib-count").textContent = state.libItems.length + (r.next ? "+" : "") + " LoRAs";
    const tb = $("#lib-table tbody");
    tb.replaceChildren(...state.libItems.map(l => {
      const o = (l.origins || [])[0] || {};
      const tr = h("tr", { "data-name": l.name, class: state.libSel === l.name ? "sel" : "", onclick: () => selectLoRA(l.name) },
        h("td", {}, h("b", {}, l.name)), h("td", {}, h("span", { class: "chip" }, l.base)), h("td", {}, l.family), h("td", { class: "num" }, l.rank || "–"),
        h("td", { class: "num" }, fmtBytes(l.size)), h("td", {}, originText(o)), h("td", { class: "muted" }, fmtAgo(l.added_at)));
      return tr;
    }));
    if (!state.libItems.length) tb.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No LoRAs. Add some with scopectl lora add FILE or lora scan DIR.")));
  }
  function originText(o) {
    switch (o.kind) {
      case "training": return `training ${o.job || ""} @ step ${o.step || 0}`;
      case "huggingface": return `hf ${o.repo || ""}`;
      case "civitai": return `civitai ${o.model_id || ""}/${o.version_id || ""}`;
      case "local": return "local";
      default: return o.kind || "–";
    }
  }
  async function selectLoRA(name) {
    state.libSel = name;
    document.querySelectorAll("#lib-table tbody tr").forEach(tr => tr.classList.toggle("sel", tr.dataset.name === name));
    const d = await api("/api/v1/loras/" + encodeURIComponent(name));
    const box = $("#lib-detail");
    const kv = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
    box.replaceChildren(
      h("div", { class: "row" }, h("h2", {}, d.name), h("span", { class: "spacer" }), h("button", { class: "btn primary", id: "sync-btn", onclick: () => syncDialog(d) }, "Install / sync…")),
      h("dl", { class: "kv" }, kv("base", d.base), kv("family", d.family), kv("rank", d.rank || "–"), kv("size", fmtBytes(d.size)), kv("sha256", h("span", { class: "mono" }, d.sha256.slice(0, 16) + "…")), kv("added", fmtAgo(d.added_at))),
      h("h3", {}, "Lineage"),
      ...(d.origins || []).map(o => h("div", { class: "row" }, h("span", { class: "chip" }, o.kind), h("span", {}, originText(o)), o.url ? h("span", { class: "muted mono" }, o.url) : null, o.path ? h("span", { class: "muted mono" }, o.path) : null)),
      h("h3", {}, `Samples (${d.samples.length})`),
      d.samples.length ? h("div", { class: "gallery" }, d.samples.map(s => /\.(mp4|webm)$/i.test(s.name)
        ? h("video", { src: `/api/v1/loras/${encodeURIComponent(d.sha256)}/samples/${s.sha256}`, muted: true, loop: true, controls: true })
        : h("img", { src: `/api/v1/loras/${encodeURIComponent(d.sha256)}/samples/${s.sha256}`, alt: s.name, loading: "lazy" }))) : h("p", { class: "muted" }, "No samples."),
      h("h3", {}, `Installed (${d.installs.length})`),
      d.installs.length ? h("table", { class: "table" }, h("tbody", {}, d.installs.map(i => h("tr", {}, h("td", { class: "mono" }, i.dir + "/" + i.file), h("td", {}, h("span", { class: "chip" }, i.form)))))) : h("p", { class: "muted" }, "Not installed anywhere scopectl knows."));
  }
  async function syncDialog(d) {
    const to = h("input", { class: "input", id: "sync-to", placeholder: "/path/to/lora or ssh://… or pod:ID" });
    const pipe = h("input", { class: "input", id: "sync-pipeline", placeholder: "pipeline (optional), e.g. longlive" });
    const ok = await dialog("Install " + d.name, "Send it in the form Scope applies exactly, as scopectl sync does.", h("div", {}, to, pipe), "Start");
    if (!ok) return;
    const r = await act("sync " + d.name, "/api/v1/loras/" + encodeURIComponent(d.sha256) + "/sync", { to: to.value, pipeline: pipe.value || undefined });
    if (r) { refreshTransfers(); }
  }

  // ---- pods
  async function loadPods() {
    const r = await api("/api/v1/pods?limit=1000");
    $("#pods-note").textContent = r.note || "";
    const cards = $("#pod-cards");
    if (!r.items.length) { cards.replaceChildren(h("div", { class: "card empty" }, "No pods. Create one with scopectl pod create or scopectl deploy --new.")); return; }
    if (!state.podSel || !r.items.some(p => p.id === state.podSel)) state.podSel = r.items[0].id;
    cards.replaceChildren(...r.items.map(podCard));
    refreshFrames(r.items);
    const sel = r.items.find(p => p.id === state.podSel);
    if (sel) { followPodLogs(sel); await podDetail(sel); }
  }
  function podCard(p) {
    const g = p.gpus[0];
    const lim = p.limits || {};
    const idle = p.status === "RUNNING" ? fmtDur(p.idle_s) + (lim.idle_stop ? " / " + fmtDur(lim.idle_stop / 1e9) : "") : "–";
    const sc = p.scope;
    const scope = sc ? h("span", { class: "pill " + (sc.up ? "ok" : "bad") }, sc.up ? "Scope up" + (sc.pipeline && sc.pipeline.pipeline_id ? " · " + sc.pipeline.pipeline_id + " (" + sc.pipeline.status + ")" : "") : "Scope down") : h("span", { class: "muted" }, "no Scope");
    const btn = (label, action, cls) => h("button", { class: "btn " + (cls || ""), "data-action": action, onclick: e => { e.stopPropagation(); podAction(p, action); } }, label);
    const actions = p.id === "local" ? [] : p.status === "RUNNING" ? [btn("Stop", "stop"), btn("Terminate", "terminate", "danger")] : p.status === "TERMINATED" ? [] : [btn("Start", "start"), btn("Terminate", "terminate", "danger")];
    const loras = sc && sc.pipeline && sc.pipeline.loaded_loras && sc.pipeline.loaded_loras.length ? h("div", { class: "muted" }, "LoRAs: " + sc.pipeline.loaded_loras.map(l => l.path.split("/").pop() + " ×" + l.scale).join(", ")) : null;
    return h("div", { class: "card pod" + (p.id === state.podSel ? " sel" : ""), "data-pod": p.id, onclick: () => { state.podSel = p.id; loadPods(); } },
      h("div", { class: "head" }, h("span", { class: "name" }, p.name || p.id), h("span", { class: "pill " + statusClass(p.status), "data-status": p.status }, p.status)),
      h("div", { class: "muted mono" }, p.id + (p.gpu_type ? " · " + p.gpu_count + "× " + p.gpu_type : "")),
      h("div", { class: "stats" },
        h("div", { class: "stat" }, h("div", { class: "v" }, p.id === "local" ? "–" : fmtUSD(p.cost_per_hr) + "/h"), h("div", { class: "l" }, "price")),
        h("div", { class: "stat" }, h("div", { class: "v" }, p.id === "local" ? "–" : fmtUSD(p.cost_so_far)), h("div", { class: "l" }, "cost so far")),
        h("div", { class: "stat" }, h("div", { class: "v" }, g ? g.utilization_pct + "%" : "–"), h("div", { class: "l" }, "GPU util")),
        h("div", { class: "stat" }, h("div", { class: "v" }, idle), h("div", { class: "l" }, "idle / limit"))),
      h("div", { class: "row" }, scope, sc && sc.sessions ? h("span", { class: "chip" }, sc.sessions + " session(s) · " + sc.output_fps.toFixed(1) + " fps") : null),
      frameBox(p),
      loras, p.gpu_error ? h("div", { class: "muted" }, "GPU: " + p.gpu_error) : null,
      h("div", { class: "row", style: null }, h("span", { class: "spacer" }), ...actions));
  }
  // Scope's headless session API gives the last frame while a session streams
  // (GET /api/v1/session/frame, proxied as /api/v1/pods/ID/frame); without a session
  // there is no frame, and the card says so with the pipeline's state.
  function frameBox(p) {
    const sc = p.scope;
    if (!sc || !sc.up) return null;
    if (sc.sessions > 0) {
      return h("div", { class: "frame", "data-frame": p.id }, h("img", { alt: "live frame from Scope on " + (p.name || p.id), src: state.frames[p.id] || null }),
        h("span", { class: "tag" }, "live · " + sc.output_fps.toFixed(1) + " fps"));
    }
    const pl = sc.pipeline && sc.pipeline.pipeline_id ? `pipeline ${sc.pipeline.pipeline_id} is ${sc.pipeline.status}` : "no pipeline is loaded";
    return h("div", { class: "noframe", "data-noframe": p.id }, `No live frame: Scope runs no streaming session (${pl}). Frames come from Scope's session API while a session streams.`);
  }
  async function refreshFrames(items) {
    await Promise.all(items.filter(p => p.scope && p.scope.up && p.scope.sessions > 0).map(async p => {
      try {
        const r = await fetch(`/api/v1/pods/${encodeURIComponent(p.id)}/frame?quality=70`, { credentials: "same-origin" });
        if (!r.ok || !(r.headers.get("Content-Type") || "").startsWith("image/")) return;
        const url = URL.createObjectURL(await r.blob());
        const old = state.frames[p.id]; state.frames[p.id] = url;
        document.querySelectorAll(`.frame[data-frame="${CSS.escape(p.id)}"] img`).forEach(i => { i.src = url; });
        if (old) setTimeout(() => URL.revokeObjectURL(old), 1000);
      } catch (e) { /* the next tick tries again */ }
    }));
  }
  async function podAction(p, action) {
    let body = {};
    if (action === "terminate") {
      const inp = h("input", { class: "input", id: "confirm-input", placeholder: p.id });
      const ok = await dialog("Terminate " + (p.name || p.id) + "?", "This deletes the pod and its container disk. Type the pod id to confirm.", inp, "Terminate", true);
      if (!ok) return; body.confirm = inp.value;
    } else {
      const ok = await dialog((action === "stop" ? "Stop " : "Start ") + (p.name || p.id) + "?", action === "stop" ? "The GPU is released; the volume is kept." : "The pod starts and bills again.", null, action === "stop" ? "Stop" : "Start", action === "stop");
      if (!ok) return;
    }
    const r = await act(action + " " + p.id, `/api/v1/pods/${encodeURIComponent(p.id)}/${action}`, body);
    if (r) loadPods();
  }
  function followPodLogs(p) {
    const pre = $("#pod-log"), src = $("#pod-logs-src"), st = $("#pod-logs-state");
    const host = /host /.test(p.note || "");
    if (!host && !(p.scope && p.scope.url)) {
      closeStream("pod"); src.textContent = ""; st.textContent = ""; st.className = "pill";
      pre.textContent = `${p.name || p.id} serves no Scope that scopectl reaches: no log to follow.`;
      return;
    }
    src.textContent = (p.name || p.id) + (host ? " · docker logs of the Scope container" : " · Scope's log");
    stream("pod", `/api/v1/pods/${encodeURIComponent(p.id)}/logs`, pre, st);
  }

  // ---- cost: GET /api/v1/cost is scopectl cost --json (the same ledger, the same sums)
  async function loadCost() {
    const r = await api("/api/v1/cost");
    const t = r.total || {};
    $("#cost-total").replaceChildren("GPU " + fmtUSD(t.gpu_dollars) + " · storage " + fmtUSD(t.storage_dollars) + " · total ", h("b", {}, fmtUSD(t.dollars)));
    const names = {};
    document.querySelectorAll("#pod-cards .pod[data-pod]").forEach(c => { const n = $(".name", c); if (n) names[c.dataset.pod] = n.textContent; });
    const empty = (n, text) => h("tr", {}, h("td", { colspan: n, class: "empty" }, text));
    const pods = r.pods || [], vols = r.volumes || [];
    $("#cost-pods tbody").replaceChildren(...(pods.length ? pods.map(l => h("tr", { "data-cost-pod": l.key },
      h("td", {}, h("span", { class: "pill " + (l.running ? "ok" : "") }, names[l.key] && names[l.key] !== l.key ? names[l.key] : l.key), names[l.key] && names[l.key] !== l.key ? h("span", { class: "muted mono" }, " " + l.key) : null),
      h("td", { class: "num" }, l.hours.toFixed(2)), h("td", { class: "num" }, fmtUSD(l.gpu_dollars)), h("td", { class: "num muted" }, fmtUSD(l.idle_dollars)),
      h("td", { class: "num" }, fmtUSD(l.storage_dollars)), h("td", { class: "num" }, h("b", {}, fmtUSD(l.dollars))))) : [empty(6, "No pod runs in the ledger yet.")]));
    $("#cost-volumes tbody").replaceChildren(...(vols.length ? vols.map(v => h("tr", { "data-volume": v.key },
      h("td", {}, h("span", { class: "pill " + (v.running ? "ok" : "") }, v.name || v.key), h("span", { class: "muted mono" }, " " + v.key + (v.running ? "" : " · gone"))),
      h("td", { class: "num" }, v.size_gb + " GB"), h("td", { class: "num" }, v.running ? fmtUSD(v.dollars_per_month) + "/mo" : "–"),
      h("td", { class: "num" }, h("b", {}, fmtUSD(v.storage_dollars))))) : [empty(4, "No network volumes seen.")]));
    $("#cost-note").textContent = (r.notes || []).join(" · ");
  }

  // ---- deploys in the background
  async function loadDeploys() {
    const r = await api("/api/v1/deploys?limit=1000");
    const box = $("#deploy-jobs");
    box.replaceChildren(...(r.jobs.length ? [h("div", { class: "jobs" }, r.jobs.slice(0, 6).map(deployJob))] : []));
    box.querySelectorAll(".bar > i").forEach(i => { i.style.width = i.dataset.w + "%"; });
  }
  function deployJob(j) {
    const cls = { running: "warn", done: "ok", failed: "bad", canceled: "" }[j.state] || "";
    const res = j.result || {};
    const what = j.state === "done" ? [res.url ? "Scope at " + res.url : "", res.pipeline && res.pipeline.pipeline_id ? "pipeline " + res.pipeline.pipeline_id + " " + res.pipeline.status : ""].filter(Boolean).join(" · ") : j.error || j.phase;
    const cancel = j.state === "running" ? h("button", { class: "btn danger", "data-action": "cancel-deploy", onclick: () => cancelDeploy(j) }, "Cancel") : null;
    return h("div", { class: "card djob", "data-deploy": j.id },
      h("div", { class: "row" }, h("b", {}, "Deploy to " + j.target), h("span", { class: "pill " + cls, "data-state": j.state }, j.state), h("span", { class: "muted" }, fmtAgo(j.started_at))),
      h("div", { class: "row" }, cancel),
      h("div", { class: (j.state === "failed" ? "" : "muted") + " phase" }, what + (j.warnings && j.warnings.length ? " · " + j.warnings.join("; ") : "")),
      h("div", { class: "muted" }, j.total_bytes ? fmtBytes(j.done_bytes) + " / " + fmtBytes(j.total_bytes) + " of LoRAs" : ""),
      j.state === "running" ? h("div", { class: "bar" }, h("i", { "data-w": j.total_bytes ? Math.round(100 * j.done_bytes / j.total_bytes) : 5 })) : null);
  }
  async function cancelDeploy(j) {
    const ok = await dialog("Cancel the deploy to " + j.target + "?", "It stops where it is; a pod it created for this deploy is terminated.", null, "Cancel deploy", true);
    if (!ok) return;
    const r = await act("cancel " + j.id, "/api/v1/deploys/" + encodeURIComponent(j.id), null, "DELETE", "canceled");
    if (r) loadDeploys();
  }
  async function deployDialog() {
    const inp = (id, ph) => h("input", { class: "input", id, placeholder: ph, autocomplete: "off" });
    const target = inp("deploy-target", "pod id, or ssh://user@host:port (a Docker host)");
    const gpu = inp("deploy-gpu", "…or a GPU type for a new pod, e.g. NVIDIA RTX A6000");
    const image = inp("deploy-image", "image (optional), e.g. daydreamlive/scope:main");
    const pipe = inp("deploy-pipeline", "pipeline to load (optional), e.g. longlive");
    const loras = inp("deploy-loras", "LoRAs NAME[:SCALE], comma-separated (optional)");
    const ok = await dialog("Deploy Scope", "Runs scopectl deploy in the background: checked first, then followed here.", h("div", {}, target, gpu, image, pipe, loras), "Deploy");
    if (!ok) return;
    const t = target.value.trim(), body = {};
    if (!t && gpu.value.trim()) { body.new = true; body.gpu = gpu.value.trim(); }
    else if (t.includes("://")) body.host = t; else body.pod = t;
    if (image.value.trim()) body.image = image.value.trim();
    if (pipe.value.trim()) body.pipeline = pipe.value.trim();
    const ls = loras.value.split(",").map(x => x.trim()).filter(Boolean); if (ls.length) body.loras = ls;
    const r = await act("deploy to " + (t || "a new " + body.gpu + " pod"), "/api/v1/deploys", body, "POST", "started");
    if (r) loadDeploys();
  }
  async function podDetail(p) {
    const box = $("#pod-detail");
    let c1 = $("#gpu-util", box), c2 = $("#gpu-mem", box);
    if (!c1 || box.dataset.pod !== p.id) {
      box.dataset.pod = p.id; state.gpuSince[p.id] = 0; state.gpuData[p.id] = [];
      c1 = h("canvas", { id: "gpu-util" }); c2 = h("canvas", { id: "gpu-mem" });
      box.replaceChildren(h("h2", {}, "GPU · " + (p.name || p.id)),
        h("div", { class: "charts" }, h("div", { class: "chartbox" }, c1), h("div", { class: "chartbox" }, c2)));
    }
    const r = await api(`/api/v1/pods/${encodeURIComponent(p.id)}/gpu?since=${state.gpuSince[p.id] || 0}`);
    state.gpuSince[p.id] = r.last; const data = state.gpuData[p.id] = (state.gpuData[p.id] || []).concat(r.samples).slice(-5000);
    const gpus = [...new Set(data.map(s => s.gpu))];
    const t0 = data.length ? data[0].t : 0;
    const series = (f, lab) => gpus.map((g, i) => ({ label: `GPU ${g} ${lab}`, data: data.filter(s => s.gpu === g).map(s => ({ x: (s.t - t0) / 1000, y: f(s) })), borderColor: palette[i % 6], backgroundColor: palette[i % 6], pointRadius: 2, borderWidth: 1.5, tension: .2 }));
    const u = chart("gpu-util", c1, { type: "line", data: { datasets: [] }, options: lineOpts({ min: 0, max: 100, title: { display: true, text: "utilisation %" } }) });
    const m = chart("gpu-mem", c2, { type: "line", data: { datasets: [] }, options: lineOpts({ beginAtZero: true, title: { display: true, text: "memory GiB · power W · °C" } }) });
    if (!u || !m) return;
    u.data.datasets = series(s => s.utilization_ratio * 100, "util");
    m.data.datasets = [].concat(series(s => s.memory_used_bytes / 2 ** 30, "mem GiB"), series(s => s.power_watts, "power W").map(d => Object.assign(d, { borderDash: [4, 3] })), series(s => s.temperature_celsius, "°C").map(d => Object.assign(d, { borderDash: [1, 3] })));
    u.options.scales.x.title = m.options.scales.x.title = { display: true, text: "seconds" };
    u.update(); m.update();
  }

  // ---- jobs
  async function loadJobs() {
    const r = await api("/api/v1/jobs?limit=1000");
    $("#jobs-note").textContent = r.note || "";
    const tb = $("#jobs-table tbody");
    if (!r.items.length) { tb.replaceChildren(h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No training jobs. Start one with scopectl train run."))); return; }
    if (!state.jobSel) state.jobSel = r.items[0].job.id;
    tb.replaceChildren(...r.items.map(j => {
      const st = j.state || {}, jb = j.job, step = st.step || jb.step || 0, total = st.total || jb.steps || 0;
      const phase = st.phase || jb.phase || "–";
      const eta = st.seconds_per_step && total > step && !st.ended_at ? fmtDur((total - step) * st.seconds_per_step) : "–";
      return h("tr", { class: jb.id === state.jobSel ? "sel" : "", "data-job": jb.id, onclick: () => { state.jobSel = jb.id; state.loss = null; state.jobKey = ""; loadJobs(); } },
        h("td", {}, h("b", {}, jb.name), h("div", { class: "muted mono" }, jb.id)), h("td", {}, h("span", { class: "pill " + statusClass(phase) }, phase)),
        h("td", {}, h("div", { class: "bar" }, h("i", { style: null, "data-w": total ? Math.round(100 * step / total) : 0 })), h("div", { class: "muted" }, `${step} / ${total || "?"}`)),
        h("td", { class: "num" }, st.loss != null ? st.loss.toFixed(4) : "–"), h("td", { class: "num" }, st.seconds_per_step ? st.seconds_per_step.toFixed(2) : "–"),
        h("td", { class: "num" }, eta), h("td", { class: "num" }, fmtUSD(j.cost)), h("td", { class: "muted mono" }, jb.pod_id || jb.target));
    }));
    tb.querySelectorAll(".bar > i").forEach(i => { i.style.width = i.dataset.w + "%"; });
    const sel = r.items.find(j => j.job.id === state.jobSel);
    if (sel) await jobDetail(sel);
  }
  async function jobDetail(j) {
    const box = $("#job-detail"), id = j.job.id;
    if (box.dataset.job !== id) {
      box.dataset.job = id; state.loss = null;
      const btn = (label, action) => h("button", { class: "btn", "data-action": action, onclick: () => act(label + " " + id, `/api/v1/jobs/${encodeURIComponent(id)}/${action}`).then(r => r && loadJobs()) }, label);
      box.replaceChildren(
        h("div", { class: "card" }, h("div", { class: "row" }, h("h2", {}, j.job.name), h("span", { class: "spacer" }), btn("Save now", "save-now"), btn("Sample now", "sample-now"), btn("Stop", "stop")),
          h("div", { class: "row" }, h("label", {}, "Series ", h("select", { class: "input", id: "loss-key", onchange: () => { state.loss = null; refreshLoss(id); } })),
            h("label", {}, "Smoothing ", h("input", { type: "range", id: "loss-smooth", min: "0", max: "0.99", step: "0.01", value: "0.6", oninput: () => drawLoss() })),
            h("label", {}, h("input", { type: "checkbox", id: "loss-log", onchange: () => drawLoss() }), " log scale"), h("span", { id: "loss-note", class: "muted" })),
          h("div", { class: "chartbox tall" }, h("canvas", { id: "loss-chart" }))),
        h("div", { class: "charts" },
          h("div", { class: "card" }, h("h2", {}, "Checkpoints"), h("div", { id: "job-ckpts" })),
          h("div", { class: "card" }, h("div", { class: "row" }, h("h2", {}, "Log"), h("span", { class: "spacer" }), h("span", { class: "pill", id: "job-log-state" })), h("pre", { class: "log", id: "job-log" }))),
        h("div", { class: "card" }, h("h2", {}, "Samples"), h("div", { id: "job-samples" })));
    }
    stream("job", `/api/v1/jobs/${encodeURIComponent(id)}/log/stream`, $("#job-log"), $("#job-log-state"));
    await Promise.all([refreshLoss(id), refreshCkpts(id), refreshSamples(id)].map(p => p.catch(e => e)));
  }
  async function refreshLoss(id) {
    const keySel = $("#loss-key");
    const key = keySel.value || "";
    const since = state.loss && state.loss.key === key ? state.loss.last : -1;
    let r;
    try { r = await api(`/api/v1/jobs/${encodeURIComponent(id)}/loss?since_step=${since}` + (key ? "&key=" + encodeURIComponent(key) : "")); }
    catch (e) { $("#loss-note").textContent = e.message; return; }
    if (keySel.options.length !== r.keys.length) keySel.replaceChildren(...r.keys.map(k => h("option", { value: k.key, selected: k.key === r.key }, k.key)));
    if (!state.loss || state.loss.key !== r.key || r.last_step < state.loss.last) state.loss = { key: r.key, points: [], last: -1 };
    state.loss.points = state.loss.points.concat(r.points); state.loss.last = r.last_step;
    $("#loss-note").textContent = state.loss.points.length + " points";
    drawLoss();
  }
  function drawLoss() {
    const c = $("#loss-chart"); if (!c || !state.loss) return;
    const a = parseFloat($("#loss-smooth").value), logY = $("#loss-log").checked;
    const raw = state.loss.points.map(p => ({ x: p[0], y: p[1] }));
    // zero-phase EMA: forward then backward, as ai-toolkit's graph does
    const ema = (pts) => { let m = null; return pts.map(p => { m = m == null ? p.y : a * m + (1 - a) * p.y; return { x: p.x, y: m }; }); };
    const smooth = a > 0 ? ema(ema(raw).reverse()).reverse() : raw;
    const ch = chart("loss", c, { type: "line", data: { datasets: [] }, options: lineOpts() });
    if (!ch) return;
    ch.data.datasets = [
      { label: state.loss.key, data: raw, borderColor: "rgba(59,109,240,.35)", backgroundColor: "rgba(59,109,240,.6)", pointRadius: 1.5, borderWidth: 1, showLine: a === 0 },
      { label: "smoothed", data: smooth, borderColor: "#e8590c", pointRadius: 0, borderWidth: 2, tension: .2 }];
    ch.options.scales.y.type = logY ? "logarithmic" : "linear";
    ch.options.scales.x.title = { display: true, text: "step" };
    ch.update();
  }
  async function refreshCkpts(id) {
    const d = await api(`/api/v1/jobs/${encodeURIComponent(id)}`);
    const box = $("#job-ckpts");
    box.replaceChildren(d.checkpoints.length ? h("table", { class: "table" }, h("thead", {}, h("tr", {}, h("th", {}, "Step"), h("th", {}, "File"), h("th", { class: "num" }, "Loss"), h("th", {}, "Library"))),
      h("tbody", {}, d.checkpoints.map(c => h("tr", {}, h("td", { class: "num" }, c.step), h("td", { class: "mono" }, c.file), h("td", { class: "num" }, c.loss != null ? c.loss.toFixed(4) : "–"),
        h("td", {}, c.lora ? h("span", { class: "chip ok" }, c.lora) : h("span", { class: "muted" }, "not collected")))))) : h("p", { class: "muted" }, "No checkpoints yet."));
  }
  async function refreshSamples(id) {
    const box = $("#job-samples");
    let g;
    try { g = await api(`/api/v1/jobs/${encodeURIComponent(id)}/samples`); } catch (e) { box.replaceChildren(h("p", { class: "muted" }, e.message)); return; }
    const key = JSON.stringify(g); if (box.dataset.key === key) return; box.dataset.key = key;
    if (!g.rows.length) { box.replaceChildren(h("p", { class: "muted" }, "No samples yet.")); return; }
    const head = h("tr", {}, h("th", {}, "step"), ...Array.from({ length: g.prompts }, (_, i) => h("th", {}, "prompt " + (i + 1))));
    box.replaceChildren(h("div", { style: null, class: "gridwrap" }, h("table", { class: "grid" }, h("thead", {}, head), h("tbody", {}, g.rows.slice().reverse().map(r => h("tr", {}, h("th", { class: "num" }, r.step),
      ...r.files.map(f => h("td", {}, f ? h("img", { src: `/api/v1/jobs/${encodeURIComponent(id)}/samples/${encodeURIComponent(f)}`, alt: f, loading: "lazy" }) : "–"))))))));
  }

  // ---- transfers
  async function refreshTransfers() {
    const r = await api("/api/v1/transfers?limit=200");
    const running = r.items.filter(t => t.state === "running").length;
    $("#xfer-count").textContent = running ? String(running) : "";
    if (state.view !== "transfers") return;
    const tb = $("#xfer-table tbody");
    if (!r.items.length) { tb.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No transfers yet. Install a LoRA from the library, or run scopectl sync / pull."))); return; }
    tb.replaceChildren(...r.items.map(t => h("tr", { "data-transfer": t.id }, h("td", {}, h("span", { class: "chip" }, t.op), " ", h("b", {}, t.lora)), h("td", { class: "mono" }, t.to || "–"),
      h("td", { class: "muted" }, t.source === "cli" ? "scopectl (pid " + t.pid + ")" : "this page"),
      h("td", {}, h("span", { class: "pill " + (t.state === "done" ? "ok" : t.state === "failed" ? "bad" : "warn") }, t.state), t.error ? h("div", { class: "muted" }, t.error) : null),
      h("td", {}, h("div", { class: "bar" }, h("i", { "data-w": t.total_bytes ? Math.round(100 * t.done_bytes / t.total_bytes) : (t.state === "done" ? 100 : 0) })), h("div", { class: "muted" }, fmtBytes(t.done_bytes) + " / " + fmtBytes(t.total_bytes))),
      h("td", { class: "muted" }, fmtAgo(t.started_at)),
      h("td", {}, t.source === "serve" && t.state === "running" ? h("button", { class: "btn danger", "data-action": "cancel-transfer",
        onclick: () => act("cancel " + t.lora, "/api/v1/transfers/" + encodeURIComponent(t.id), null, "DELETE", "canceled").then(r => r && refreshTransfers()) }, "Cancel") : null))));
    tb.querySelectorAll(".bar > i").forEach(i => { i.style.width = i.dataset.w + "%"; });
  }

  // ---- views and the update loop
  const loaders = { library: () => loadLibrary(true), pods: () => Promise.all([loadPods(), loadDeploys()]).then(loadCost), jobs: loadJobs, transfers: refreshTransfers };
  function show(view) {
    state.view = view;
    document.querySelectorAll(".tab").forEach(b => b.classList.toggle("active", b.dataset.view === view));
    document.querySelectorAll(".view").forEach(v => v.classList.toggle("hidden", v.id !== "view-" + view));
    history.replaceState(null, "", "#" + view);
    loaders[view]().catch(e => toast(e.message, true));
  }
  async function tick() {
    try {
      if (state.view === "pods") { await Promise.all([loadPods(), loadDeploys()]); await loadCost(); }
      else if (state.view === "jobs") await loadJobs();
      await refreshTransfers();
    } catch (e) { $("#live").classList.add("stale"); }
    setTimeout(tick, 3000);
  }
  function init() {
    const dark = localStorage.getItem("scopectl-theme") ? localStorage.getItem("scopectl-theme") === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
    document.documentElement.classList.toggle("dark", dark);
    $("#theme").addEventListener("click", () => { const d = document.documentElement.classList.toggle("dark"); localStorage.setItem("scopectl-theme", d ? "dark" : "light"); Object.values(state.charts).forEach(c => c.destroy()); state.charts = {}; document.querySelectorAll("[data-pod],[data-job]").forEach(e => { if (e.id) delete e.dataset.pod; }); $("#pod-detail").dataset.pod = ""; $("#job-detail").dataset.job = ""; show(state.view); });
    document.querySelectorAll(".tab").forEach(b => b.addEventListener("click", () => show(b.dataset.view)));
    let t; $("#lib-filter").addEventListener("input", () => { clearTimeout(t); t = setTimeout(() => loadLibrary(true).catch(e => toast(e.message, true)), 200); });
    $("#lib-base").addEventListener("change", () => loadLibrary(true).catch(e => toast(e.message, true)));
    $("#lib-more").addEventListener("click", () => loadLibrary(false).catch(e => toast(e.message, true)));
    $("#deploy-btn").addEventListener("click", () => deployDialog());
    $("#login-btn").addEventListener("click", async () => {
      if (state.session && state.session.authorized) { state.session = await api("/logout", { method: "POST", body: {} }); renderSession(); }
      else { await ensureLogin(); }
    });
    api("/api/v1/session").then(s => { state.session = s; renderSession(); }).catch(() => { state.session = { authorized: false }; ensureLogin().then(() => show(state.view)); });
    const v = location.hash.slice(1);
    show(loaders[v] ? v : "library");
    setTimeout(tick, 3000);
  }
  document.addEventListener("DOMContentLoaded", init);
})();
