// Ingest: documents (uploaded, or server-side paths) into a dataset; per-file progress;
// browse a dataset's samples and sources.
'use strict';

(() => {
  const { h, fmt } = NF;

  function fileRow(ev) {
    return h('tr', { testid: 'ingest-file-row', dataset: { status: ev.status, path: ev.path } },
      h('td', { class: 'ellipsis', title: ev.path }, String(ev.path).split('/').pop()),
      h('td', {}, NF.badge(ev.status)),
      h('td', {}, ev.reader || '—'),
      h('td', { class: 'num' }, fmt.bytes(ev.size)),
      h('td', { class: 'num' }, ev.pages !== null && ev.pages !== undefined ? fmt.count(ev.pages) : '—'),
      h('td', { class: 'num' }, fmt.count(ev.tokens)),
      h('td', { class: 'num' }, fmt.count(ev.windows)),
      h('td', {}, ev.split || '—'),
      h('td', { class: 'small' }, ev.message ? h('div', { class: ev.status === 'error' ? 'text-error' : 'muted' }, ev.message) : null,
        (ev.warnings || []).map((w) => h('div', { class: 'muted' }, '⚠ ', w))));
  }

  const fileHead = () => h('thead', {}, h('tr', {}, ['file', 'status', 'reader', 'size', 'pages', 'tokens', 'windows', 'split', 'notes'].map((t) => h('th', {}, t))));

  // The dataset browser: summary, samples, sources.
  async function showDataset(slot, name) {
    NF.fill(slot, h('p', { class: 'muted' }, h('span', { class: 'spinner' }), ` Loading dataset ${name}…`));
    let d;
    try {
      d = await NF.api('GET', `/api/datasets/${encodeURIComponent(name)}`);
    } catch (e) {
      NF.fill(slot, NF.errorBox(e));
      return;
    }
    const info = d.info || {};
    const man = d.manifest || {};
    const sources = man.sources || [];
    const samples = info.samples || [];
    NF.fill(slot,
      h('div', { class: 'row spread' }, h('h2', { testid: 'dataset-name' }, `Dataset ${info.name || name}`),
        h('a', { class: 'btn', href: `/configure?dataset=${encodeURIComponent(info.name || name)}`, 'data-link': true, testid: 'dataset-train' }, 'Train on it')),
      NF.kv([
        ['path', info.path],
        ['created', fmt.time(info.created)],
        ['tokenizer', info.tokenizer],
        ['sources', `${fmt.count(info.sources)} (${fmt.count(info.errors)} errors)`],
        ['train / val tokens', `${fmt.count(info.train_tokens)} / ${fmt.count(info.val_tokens)}`],
        ['windows / examples', `${fmt.count(info.windows)} / ${fmt.count(info.examples)}`],
        ['window length', man.settings ? `${fmt.count(man.settings.seq_len)} tokens` : undefined],
      ], 'dataset-info'),
      h('h3', {}, `Samples (${samples.length})`),
      h('div', { class: 'samples', testid: 'dataset-samples' },
        samples.length ? samples.map((s, i) => h('details', { class: 'sample', testid: 'dataset-sample', open: i < 2 },
          h('summary', {}, `window ${i + 1} · ${s.length.toLocaleString('en-US')} chars`), h('pre', { class: 'sample-text' }, s)))
          : h('p', { class: 'muted' }, 'No samples.')),
      h('h3', {}, `Sources (${sources.length})`),
      h('div', { class: 'table-wrap' }, h('table', { class: 'table', testid: 'dataset-sources' }, fileHead(),
        h('tbody', {}, sources.map((s) => {
          const r = fileRow(s);
          r.dataset.testid = 'dataset-source-row';
          return r;
        })))));
  }

  NF.pages['/ingest'] = {
    name: 'ingest',
    title: 'Ingest documents',
    async render(root) {
      const errSlot = h('div', { testid: 'ingest-error', hidden: true });
      const name = h('input', { id: 'ing-name', testid: 'ing-name', required: true, placeholder: 'e.g. handbook', pattern: '[A-Za-z0-9._\\-]+' });
      const model = h('select', { id: 'ing-model', testid: 'ing-model' });
      const tokenizer = h('input', { id: 'ing-tokenizer', testid: 'ing-tokenizer', placeholder: 'from the model (optional path)' });
      const files = h('input', { type: 'file', multiple: true, id: 'ing-files', testid: 'ing-files' });
      const folder = h('input', { type: 'file', multiple: true, id: 'ing-folder', testid: 'ing-folder', webkitdirectory: true });
      const paths = h('textarea', { id: 'ing-paths', testid: 'ing-paths', rows: 3, placeholder: '/path/on/this/machine/docs\n/another/file.pdf' });
      const seqLen = h('input', { type: 'number', min: 8, id: 'ing-seq-len', testid: 'ing-seq-len', placeholder: 'default' });
      const force = h('input', { type: 'checkbox', id: 'ing-force', testid: 'ing-force' });
      const startBtn = h('button', { type: 'submit', class: 'btn primary', id: 'ing-start', testid: 'ing-start' }, 'Start ingest');
      const chosen = h('div', { class: 'muted small', testid: 'ing-chosen' }, 'No files chosen.');
      const job = h('div', { testid: 'ingest-job', dataset: { state: 'idle' } });
      const dsList = h('div', { testid: 'dataset-list' });
      const dsView = h('div', { testid: 'dataset-view' });

      const form = h('form', { class: 'form', testid: 'ingest-form' },
        h('div', { class: 'form-grid' },
          NF.field('Dataset name', name),
          NF.field('Model (its tokenizer)', model),
          NF.field('Tokenizer', tokenizer),
          NF.field('Window length', seqLen, 'tokens'),
          NF.field('Upload files', files),
          NF.field('Upload a folder', folder),
          h('div', { class: 'field span2' }, h('span', { class: 'field-label' }, 'Or paths on the server (one per line)'), paths),
          h('label', { class: 'check' }, force, ' Replace an existing dataset of this name')),
        chosen,
        h('div', { class: 'row' }, startBtn));
      root.append(errSlot,
        NF.section('New dataset', 'ingest-card', form),
        NF.section('Progress', 'ingest-progress-card', job),
        h('div', { class: 'grid-ds' }, NF.section('Datasets', 'datasets-card', dsList), NF.section(null, 'dataset-card', dsView)));

      const picked = () => [...files.files, ...folder.files];
      const showChosen = () => {
        const f = picked();
        chosen.textContent = f.length ? `${f.length} file(s) chosen, ${fmt.bytes(f.reduce((a, x) => a + x.size, 0))}` : 'No files chosen.';
      };
      files.addEventListener('change', showChosen);
      folder.addEventListener('change', showChosen);

      async function loadDatasets(select) {
        let list;
        try { list = await NF.loadDatasets(); } catch (e) { NF.fill(dsList, NF.errorBox(e)); return; }
        NF.clear(dsList);
        if (!list.length) dsList.append(h('p', { class: 'muted' }, 'No datasets yet.'));
        dsList.append(h('ul', { class: 'list' }, list.map((d) => h('li', {},
          h('a', { href: '#', testid: 'dataset-link', dataset: { name: d.name }, onclick: (e) => { e.preventDefault(); showDataset(dsView, d.name); } }, d.name),
          h('span', { class: 'muted small' }, ` ${fmt.si(d.train_tokens)} tokens, ${fmt.count(d.sources)} sources`)))));
        if (select) showDataset(dsView, select);
      }

      // Upload the chosen files under a fresh random upload id; returns the id, or null.
      async function upload(list, status) {
        if (!list.length) return null;
        const id = NF.randomId(16);
        const used = new Set();
        let done = 0;
        for (const f of list) {
          // Folder uploads carry their relative path; flatten it into one file name (the
          // server takes one plain path component: no separators, no leading dot), keeping
          // the rest of the name as it is, since it is the document's provenance.
          let n = (f.webkitRelativePath || f.name).replace(/[\\/]+/g, '__').replace(/^\.+/, '_');
          while (used.has(n)) n = '_' + n;
          used.add(n);
          status(`Uploading ${done + 1} / ${list.length}: ${f.name} (${fmt.bytes(f.size)})`, done, list.length);
          await NF.api('PUT', `/api/uploads/${id}/${encodeURIComponent(n)}`, f);
          done++;
        }
        status(`Uploaded ${list.length} file(s).`, done, list.length);
        return id;
      }

      form.addEventListener('submit', async (e) => {
        e.preventDefault();
        NF.showError(errSlot, null);
        const serverPaths = paths.value.split('\n').map((s) => s.trim()).filter(Boolean);
        const list = picked();
        if (!name.value.trim()) { NF.showError(errSlot, { error: 'Name the dataset.', hint: null }); return; }
        if (!list.length && !serverPaths.length) { NF.showError(errSlot, { error: 'Choose files or a folder, or type paths on the server.', hint: null }); return; }
        startBtn.disabled = true;
        const stateLine = h('div', { class: 'row' }, h('span', { class: 'spinner' }), h('span', { testid: 'ingest-state' }, 'Starting…'));
        let bar = NF.progressBar(0, 0, 'ingest-progress');
        const barSlot = h('div', {}, bar);
        const tbody = h('tbody', { testid: 'ingest-files' });
        const summary = h('div', { testid: 'ingest-summary' });
        const jobErr = h('div', { hidden: true, testid: 'ingest-job-error' });
        NF.fill(job, stateLine, barSlot, jobErr, h('div', { class: 'table-wrap' }, h('table', { class: 'table', testid: 'ingest-file-table' }, fileHead(), tbody)), summary);
        job.dataset.state = 'running';
        const setBar = (d, t) => { const nb = NF.progressBar(d, t, 'ingest-progress'); bar.replaceWith(nb); bar = nb; };
        const setState = (t) => { stateLine.querySelector('[data-testid=ingest-state]').textContent = t; };
        const finish = (state) => {
          job.dataset.state = state;
          const sp = stateLine.querySelector('.spinner');
          if (sp) sp.remove();
          startBtn.disabled = false;
        };
        try {
          const uploadId = await upload(list, (t, d, n) => { setState(t); setBar(d, n); });
          const body = { name: name.value.trim(), model: model.value };
          if (tokenizer.value.trim()) body.tokenizer = tokenizer.value.trim();
          if (serverPaths.length) body.paths = serverPaths;
          if (uploadId) body.upload = uploadId;
          if (seqLen.value) body.seq_len = Number(seqLen.value);
          if (force.checked) body.force = true;
          const r = await NF.api('POST', '/api/ingest', body);
          job.dataset.job = r.job;
          setState('Reading and tokenizing…');
          let nFiles = 0;
          let doneEv = null;
          NF.followJob(r.job, (ev) => {
            if (ev.type === 'ingest.file') {
              nFiles++;
              tbody.append(fileRow(ev));
              setState(`Read ${nFiles} file(s)…`);
            } else if (ev.type === 'progress') {
              setBar(ev.done, ev.total);
              setState(`${ev.task}: ${fmt.count(ev.done)}${ev.total ? ' / ' + fmt.count(ev.total) : ''} ${ev.unit || ''}`);
            } else if (ev.type === 'ingest.done') {
              doneEv = ev;
              NF.fill(summary, NF.kv([
                ['dataset', ev.dataset], ['written', ev.written ? 'yes' : 'no (an existing dataset was kept)'],
                ['sources', `${ev.sources}: ${ev.ok} ok, ${ev.errors} errors, ${ev.skipped} skipped`],
                ['train / val tokens', `${fmt.count(ev.train_tokens)} / ${fmt.count(ev.val_tokens)}`],
                ['windows / examples', `${fmt.count(ev.windows)} / ${fmt.count(ev.examples)}`],
                ['duplicates removed', fmt.count(ev.duplicates_removed)],
              ], 'ingest-done'));
            }
          }, (s) => {
            const ok = s && s.status === 'ok';
            setBar(1, 1);
            if (ok) {
              setState(`Done: ${nFiles} file(s) → dataset ${doneEv ? doneEv.dataset : body.name}.`);
              finish('done');
              loadDatasets(doneEv ? doneEv.dataset : body.name);
            } else {
              setState('Failed.');
              NF.showError(jobErr, NF.jobError(s));
              finish('failed');
              loadDatasets(doneEv && doneEv.written ? doneEv.dataset : null);
            }
          });
        } catch (err) {
          setState('Failed.');
          NF.showError(jobErr, err);
          finish('failed');
        }
      });

      try {
        const models = await NF.loadModels();
        NF.options(model, models.map((m) => ({ value: m.name, label: m.name })), models[0] && models[0].name, models.length ? undefined : 'no models yet');
      } catch (e) {
        NF.showError(errSlot, e);
      }
      loadDatasets(NF.query().get('dataset'));
    },
  };
})();
