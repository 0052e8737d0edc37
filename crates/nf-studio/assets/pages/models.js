// Models: the store; import from a path; pull from the hub with progress; inspect.
'use strict';

(() => {
  const { h, fmt } = NF;

  async function inspect(slot, name) {
    NF.fill(slot, h('p', { class: 'muted' }, h('span', { class: 'spinner' }), ` Inspecting ${name}…`));
    let r;
    try {
      r = await NF.api('GET', `/api/models/${encodeURIComponent(name)}`);
    } catch (e) {
      NF.fill(slot, NF.errorBox(e));
      return;
    }
    const s = r.stored || {};
    const i = r.info || {};
    const types = i.tensor_types ? Object.entries(i.tensor_types).map(([k, v]) => `${k}: ${v}`).join(', ') : null;
    NF.fill(slot,
      h('div', { class: 'row spread' }, h('h2', { testid: 'model-inspect-name' }, s.name || name),
        h('div', { class: 'row' },
          h('a', { class: 'btn', href: `/configure?model=${encodeURIComponent(s.name || name)}`, 'data-link': true }, 'Train'),
          h('a', { class: 'btn', href: `/generate?model=${encodeURIComponent(s.name || name)}`, 'data-link': true }, 'Generate'))),
      h('div', { class: 'grid2' },
        NF.kv([
          ['format', s.format], ['source', s.source], ['added', fmt.time(s.added)], ['size', fmt.bytes(s.bytes)], ['path', s.path],
        ], 'model-stored'),
        NF.kv([
          ['architecture', i.arch], ['parameters', i.n_params ? `${fmt.si(i.n_params)} (${fmt.count(i.n_params)})` : undefined],
          ['layers', i.n_layers], ['dim / hidden', i.dim ? `${i.dim} / ${i.hidden_dim}` : undefined],
          ['heads / kv heads', i.n_heads ? `${i.n_heads} / ${i.n_kv_heads} (head dim ${i.head_dim})` : undefined],
          ['vocabulary', i.vocab_size ? fmt.count(i.vocab_size) : undefined], ['context', i.context_length ? `${fmt.count(i.context_length)} tokens` : undefined],
          ['rope', i.rope_theta ? `θ = ${i.rope_theta}, ${i.rope_style}` : undefined],
          ['tied embeddings', i.tied_embeddings === undefined ? undefined : String(i.tied_embeddings)],
          ['tensor types', types || undefined], ['tokenizer', i.tokenizer === undefined ? undefined : i.tokenizer],
          ['chat template', i.chat_template === undefined ? undefined : i.chat_template ? 'yes' : 'no'],
        ], 'model-info')),
      s.files && s.files.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'table compact', testid: 'model-files' },
        h('thead', {}, h('tr', {}, h('th', {}, 'file'), h('th', { class: 'num' }, 'size'), h('th', {}, 'sha256'))),
        h('tbody', {}, s.files.map((f) => h('tr', {}, h('td', { class: 'mono' }, f.path), h('td', { class: 'num' }, fmt.bytes(f.size)), h('td', { class: 'mono small ellipsis', title: f.sha256 }, f.sha256)))))) : null);
    slot.dataset.model = s.name || name;
  }

  NF.pages['/models'] = {
    name: 'models',
    title: 'Models',
    async render(root) {
      const errSlot = h('div', { testid: 'models-error', hidden: true });
      const tbody = h('tbody', { testid: 'models-body' });
      const inspectSlot = h('div', { testid: 'model-inspect' }, h('p', { class: 'muted' }, 'Choose a model to inspect it.'));

      const impPath = h('input', { id: 'imp-path', testid: 'imp-path', required: true, placeholder: '/path/to/model (folder, .gguf or llama2.c .bin)' });
      const impName = h('input', { id: 'imp-name', testid: 'imp-name', placeholder: 'default: from the file name' });
      const impTok = h('input', { id: 'imp-tokenizer', testid: 'imp-tokenizer', placeholder: 'tokenizer path (llama2.c models need one)' });
      const impForce = h('input', { type: 'checkbox', id: 'imp-force', testid: 'imp-force' });
      const impBtn = h('button', { type: 'submit', class: 'btn primary', id: 'imp-start', testid: 'imp-start' }, 'Import');
      const impJob = h('div', { testid: 'import-job', dataset: { state: 'idle' } });

      const pullRepo = h('input', { id: 'pull-repo', testid: 'pull-repo', required: true, placeholder: 'owner/name' });
      const pullRev = h('input', { id: 'pull-revision', testid: 'pull-revision', placeholder: 'main' });
      const pullInclude = h('input', { id: 'pull-include', testid: 'pull-include', placeholder: 'default: what a model needs (e.g. *.gguf, *.bin)' });
      const pullBtn = h('button', { type: 'submit', class: 'btn primary', id: 'pull-start', testid: 'pull-start' }, 'Pull');
      const pullJob = h('div', { testid: 'pull-job', dataset: { state: 'idle' } });

      root.append(errSlot,
        NF.section('In the store', 'models-card', h('div', { class: 'table-wrap' }, h('table', { class: 'table', testid: 'models-table' },
          h('thead', {}, h('tr', {}, ['name', 'format', 'size', 'source', 'added', ''].map((t) => h('th', {}, t)))), tbody))),
        NF.section(null, 'inspect-card', inspectSlot),
        h('div', { class: 'grid2' },
          NF.section('Import from a path', 'import-card', h('form', { class: 'form', testid: 'import-form', onsubmit: doImport },
            NF.field('Path on the server', impPath), NF.field('Name', impName), NF.field('Tokenizer', impTok),
            h('label', { class: 'check' }, impForce, ' Replace a stored model of this name'), h('div', { class: 'row' }, impBtn)), impJob),
          NF.section('Pull from the hub', 'pull-card', h('form', { class: 'form', testid: 'pull-form', onsubmit: doPull },
            NF.field('Repository', pullRepo), NF.field('Revision', pullRev),
            NF.field('Files', pullInclude), h('div', { class: 'row' }, pullBtn)), pullJob)));

      async function refresh(select) {
        let list;
        try {
          list = await NF.loadModels();
          NF.showError(errSlot, null);
        } catch (e) {
          NF.showError(errSlot, e);
          return;
        }
        NF.clear(tbody);
        if (!list.length) tbody.append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No models yet: import one from a path or pull one.')));
        for (const m of list) {
          tbody.append(h('tr', { testid: 'model-row', dataset: { name: m.name } },
            h('td', { class: 'mono' }, m.name), h('td', {}, m.format), h('td', { class: 'num' }, fmt.bytes(m.bytes)),
            h('td', { class: 'ellipsis small', title: m.source }, m.source), h('td', {}, fmt.time(m.added)),
            h('td', {}, h('button', { class: 'btn small', testid: 'model-inspect-btn', onclick: () => inspect(inspectSlot, m.name) }, 'Inspect'))));
        }
        if (select) inspect(inspectSlot, select);
      }

      function jobUI(slot, label) {
        const state = h('span', { testid: 'job-state' }, `${label}…`);
        const spinner = h('span', { class: 'spinner' });
        const bars = h('div', { class: 'downloads', testid: 'download-list' });
        const err = h('div', { hidden: true });
        NF.fill(slot, h('div', { class: 'row' }, spinner, state), bars, err);
        slot.dataset.state = 'running';
        const rows = new Map();
        return {
          progress(ev) {
            let row = rows.get(ev.file);
            const pct = ev.total ? ` · ${((100 * ev.done) / ev.total).toFixed(0)}%` : '';
            const text = `${ev.file}: ${fmt.bytes(ev.done)}${ev.total ? ' / ' + fmt.bytes(ev.total) : ''}${pct}`;
            if (!row) {
              row = { label: h('div', { class: 'small mono' }), bar: NF.progressBar(0, 0) };
              row.wrap = h('div', { class: 'download', testid: 'download-row' }, row.label, row.bar);
              rows.set(ev.file, row);
              bars.append(row.wrap);
            }
            row.label.textContent = text;
            const nb = NF.progressBar(ev.done, ev.total);
            row.bar.replaceWith(nb);
            row.bar = nb;
          },
          end(ok, msg, e) {
            spinner.remove();
            state.textContent = msg;
            slot.dataset.state = ok ? 'done' : 'failed';
            if (!ok) NF.showError(err, e);
          },
        };
      }

      async function doImport(e) {
        e.preventDefault();
        const ui = jobUI(impJob, 'Importing');
        impBtn.disabled = true;
        try {
          const body = { path: impPath.value.trim() };
          if (impName.value.trim()) body.name = impName.value.trim();
          if (impTok.value.trim()) body.tokenizer = impTok.value.trim();
          if (impForce.checked) body.force = true;
          const r = await NF.api('POST', '/api/models/import', body);
          let stored = null;
          NF.followJob(r.job, (ev) => { if (ev.type === 'model.stored') stored = ev; }, (s) => {
            impBtn.disabled = false;
            if (s && s.status === 'ok') {
              ui.end(true, `Imported ${stored ? stored.name : 'the model'}${stored ? ' (' + fmt.bytes(stored.bytes) + ')' : ''}.`);
              refresh(stored ? stored.name : null);
            } else {
              ui.end(false, 'Import failed.', NF.jobError(s));
            }
          });
        } catch (err) {
          impBtn.disabled = false;
          ui.end(false, 'Import failed.', err);
        }
      }

      async function doPull(e) {
        e.preventDefault();
        const ui = jobUI(pullJob, 'Pulling');
        pullBtn.disabled = true;
        try {
          const body = { repo: pullRepo.value.trim() };
          if (pullRev.value.trim()) body.revision = pullRev.value.trim();
          const globs = pullInclude.value.split(/[,\s]+/).filter(Boolean);
          if (globs.length) body.include = globs;
          const r = await NF.api('POST', '/api/models/pull', body);
          let stored = null;
          NF.followJob(r.job, (ev) => {
            if (ev.type === 'download.progress') ui.progress(ev);
            else if (ev.type === 'model.stored') stored = ev;
          }, (s) => {
            pullBtn.disabled = false;
            if (s && s.status === 'ok') {
              ui.end(true, `Pulled ${stored ? stored.name : body.repo}.`);
              refresh(stored ? stored.name : null);
            } else {
              ui.end(false, 'Pull failed.', NF.jobError(s));
            }
          });
        } catch (err) {
          pullBtn.disabled = false;
          ui.end(false, 'Pull failed.', err);
        }
      }

      await refresh(NF.query().get('model'));
    },
  };
})();
