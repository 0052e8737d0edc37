// Audit: the log with filters, verify, export.
'use strict';

(() => {
  const { h, fmt } = NF;

  const artifacts = (list) => (list || []).map((a) => h('div', { class: 'small mono ellipsis', title: [a.path, a.sha256 ? `sha256 ${a.sha256}` : null].filter(Boolean).join('\n') },
    h('span', { class: 'muted' }, a.kind), a.path ? ` ${String(a.path).replace(/\/+$/, '').split('/').pop()}` : null));

  function entryRow(e) {
    const details = e.details ? JSON.stringify(e.details) : '';
    return h('tr', { testid: 'audit-row', dataset: { seq: e.seq, command: e.command, result: e.result } },
      h('td', { class: 'num' }, String(e.seq)),
      h('td', { class: 'nowrap' }, fmt.time(e.time)),
      h('td', { class: 'mono' }, e.command, e.event ? h('span', { class: 'muted' }, ` · ${e.event}`) : null),
      h('td', {}, NF.badge(e.result)),
      h('td', {}, artifacts(e.inputs)),
      h('td', {}, artifacts(e.outputs)),
      h('td', { class: 'small' },
        e.error ? h('div', { class: 'text-error' }, e.error) : null,
        details ? h('details', {}, h('summary', {}, 'details'), h('pre', { class: 'small' }, JSON.stringify(e.details, null, 2))) : null,
        h('div', { class: 'muted' }, `${e.user}@${e.host}`),
        e.sig ? h('div', { class: 'muted' }, 'signed') : null));
  }

  NF.pages['/audit'] = {
    name: 'audit',
    title: 'Audit log',
    async render(root) {
      const errSlot = h('div', { testid: 'audit-error', hidden: true });
      const since = h('input', { type: 'datetime-local', id: 'audit-since', testid: 'audit-since' });
      const until = h('input', { type: 'datetime-local', id: 'audit-until', testid: 'audit-until' });
      const command = h('input', { id: 'audit-command', testid: 'audit-command', placeholder: 'e.g. train', list: 'audit-commands' });
      const commands = h('datalist', { id: 'audit-commands' });
      const result = h('select', { id: 'audit-result', testid: 'audit-result' });
      NF.options(result, [{ value: 'ok', label: 'ok' }, { value: 'error', label: 'error' }], '', 'any');
      const apply = h('button', { type: 'submit', class: 'btn', id: 'audit-apply', testid: 'audit-apply' }, 'Apply filters');
      const verifyBtn = h('button', { type: 'button', class: 'btn primary', id: 'audit-verify', testid: 'audit-verify' }, 'Verify the log');
      const verifyOut = h('div', { id: 'audit-verify-result', testid: 'audit-verify-result', dataset: { state: 'none' } });
      const tbody = h('tbody', { testid: 'audit-body' });
      const count = h('span', { class: 'muted small', testid: 'audit-count' });

      const filters = h('form', { class: 'form filters', testid: 'audit-filters' },
        NF.field('Since', since), NF.field('Until', until), NF.field('Command', command), NF.field('Result', result),
        h('div', { class: 'field' }, h('span', { class: 'field-label' }, '\u00a0'), apply), commands);
      root.append(errSlot,
        h('div', { class: 'grid2' },
          NF.section('Integrity', 'verify-card', h('p', { class: 'muted small' }, 'Checks the hash chain (and signatures) of every entry.'), h('div', { class: 'row' }, verifyBtn), verifyOut),
          NF.section('Export', 'export-card', h('p', { class: 'muted small' }, 'The whole log as a document.'),
            h('div', { class: 'row' },
              h('a', { class: 'btn', href: NF.withToken('/api/audit/export?format=json'), download: 'audit.json', testid: 'audit-export-json' }, 'Export JSON'),
              h('a', { class: 'btn', href: NF.withToken('/api/audit/export?format=csv'), download: 'audit.csv', testid: 'audit-export-csv' }, 'Export CSV')))),
        NF.section(null, 'audit-card', h('div', { class: 'row spread' }, h('h2', {}, 'Entries ', count)), filters,
          h('div', { class: 'table-wrap' }, h('table', { class: 'table', testid: 'audit-table' },
            h('thead', {}, h('tr', {}, ['seq', 'time', 'command', 'result', 'inputs', 'outputs', ''].map((t) => h('th', {}, t)))), tbody))));

      const iso = (v) => (v ? new Date(v).toISOString() : '');
      let known = new Set();
      async function load() {
        const p = new URLSearchParams();
        if (since.value) p.set('since', iso(since.value));
        if (until.value) p.set('until', iso(until.value));
        if (command.value.trim()) p.set('command', command.value.trim());
        if (result.value) p.set('result', result.value);
        apply.disabled = true;
        try {
          const list = await NF.api('GET', '/api/audit' + (p.toString() ? '?' + p : ''));
          const entries = list.map((x) => x.entry || x);
          NF.showError(errSlot, null);
          NF.clear(tbody);
          if (!entries.length) tbody.append(h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No entries match.')));
          for (const e of entries) tbody.append(entryRow(e));
          count.textContent = `· ${entries.length} shown`;
          tbody.dataset.count = String(entries.length);
          tbody.dataset.filter = p.toString();
          for (const e of entries) known.add(e.command);
          NF.fill(commands, [...known].sort().map((c) => h('option', { value: c })));
        } catch (e) {
          NF.showError(errSlot, e);
        } finally {
          apply.disabled = false;
        }
      }
      filters.addEventListener('submit', (e) => { e.preventDefault(); load(); });

      verifyBtn.addEventListener('click', async () => {
        verifyBtn.disabled = true;
        verifyOut.dataset.state = 'loading';
        NF.fill(verifyOut, h('p', { class: 'muted' }, h('span', { class: 'spinner' }), ' Verifying…'));
        try {
          const v = await NF.api('POST', '/api/audit/verify');
          verifyOut.dataset.state = v.intact ? 'intact' : 'broken';
          verifyOut.dataset.entries = String(v.entries);
          NF.fill(verifyOut,
            h('div', { class: v.intact ? 'verdict ok' : 'verdict bad', testid: 'audit-verdict' },
              v.intact ? `✓ Intact: ${fmt.count(v.entries)} entries checked` : `✗ Broken${v.problem_kind ? ' (' + v.problem_kind + ')' : ''} after ${fmt.count(v.entries)} good entries`),
            NF.kv([
              ['entries', fmt.count(v.entries)], ['signed', fmt.count(v.signed)],
              ['first', fmt.time(v.first_time)], ['last', fmt.time(v.last_time)],
              ['head seq', v.head_seq === null || v.head_seq === undefined ? '—' : String(v.head_seq)],
              ['key', v.key || 'none (unsigned)'],
              ['problem', v.problem || undefined], ['at seq', v.problem_seq === null || v.problem_seq === undefined ? undefined : String(v.problem_seq)],
            ], 'audit-verify-facts'),
            (v.notes || []).length ? h('ul', { class: 'small muted' }, v.notes.map((n) => h('li', {}, n))) : null);
        } catch (e) {
          verifyOut.dataset.state = 'error';
          NF.fill(verifyOut, NF.errorBox(e));
        } finally {
          verifyBtn.disabled = false;
        }
      });

      await load();
    },
  };
})();
