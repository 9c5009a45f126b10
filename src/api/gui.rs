//! The browser GUI: one static page that drives the same JSON API (the browser sends
//! the Basic credentials it was asked for).

pub const INDEX_HTML: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>packhunt</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style>
</head><body>
<h1>packhunt</h1>
<p id="frontends"></p>
<form id="search"><input name="q" placeholder="client id, hostname or label:NAME"> <button>Search</button></form>
<table id="clients"><thead><tr><th>client</th><th>hostname</th><th>os</th><th>connected</th><th>frontend</th><th>last seen</th><th></th></tr></thead><tbody></tbody></table>
<pre id="out"></pre>
<script>
async function api(path, opts) { const r = await fetch(path, opts); return r.json(); }
async function load(q) {
  const f = await api('/api/v1/frontends');
  document.getElementById('frontends').textContent = f.items.map(x => `${x.name} (${x.role}${x.up ? '' : ', DOWN'}): ${x.connected_clients} agents`).join(', ');
  const c = await api('/api/v1/clients?limit=500&search=' + encodeURIComponent(q || ''));
  const body = document.querySelector('#clients tbody'); body.innerHTML = '';
  for (const x of c.items) {
    const tr = document.createElement('tr');
    for (const v of [x.client_id, x.hostname, x.os, x.connected ? 'yes' : 'no', x.frontend || '', new Date(x.last_seen_ms).toISOString()]) {
      const td = document.createElement('td'); td.textContent = v; tr.appendChild(td);
    }
    const td = document.createElement('td'); const b = document.createElement('button'); b.textContent = 'Collect info';
    b.onclick = async () => {
      const r = await api(`/api/v1/clients/${x.client_id}/collections`, {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({artifacts: ['Generic.Client.Info']})});
      document.getElementById('out').textContent = JSON.stringify(r, null, 2);
    };
    td.appendChild(b); tr.appendChild(td); body.appendChild(tr);
  }
}
document.getElementById('search').onsubmit = e => { e.preventDefault(); load(e.target.q.value); };
load('');
</script></body></html>
"#;
