// Dashboard: the runs (running, finished, failed) and the selected run's live charts.
'use strict';

(() => {
  const { h, fmt } = NF;
  const MS_PARTS = ['matmul', 'attention', 'norms', 'loss', 'other', 'optimizer', 'data'];

  function runRow(run, selected, onSelect) {
    const tr = h('tr', {
      class: 'clickable' + (selected ? ' selected' : ''), testid: 'run-row',
      dataset: { runId: run.id, status: run.status }, onclick: () => onSelect(run.id),
    },
    h('td', { class: 'mono' }, run.id),
    h('td', {}, NF.badge(run.status)),
    h('td', {}, run.method || '—'),
    h('td', { class: 'ellipsis', title: run.model || '' }, run.model ? String(run.model).split('/').pop() : '—'),
    h('td', { class: 'num' }, run.step === null || run.step === undefined ? '—' : `${fmt.count(run.step)} / ${fmt.count(run.steps)}`),
    h('td', { class: 'num' }, fmt.loss(run.loss_ema !== null && run.loss_ema !== undefined ? run.loss_ema : run.loss)),
    h('td', { class: 'num' }, fmt.loss(run.val_loss)),
    h('td', {}, fmt.time(run.started)));
    return tr;
  }

  // The live view of one run, fed by its SSE stream.
  function runView(runId, onStatus) {
    const st = {
      summary: null, start: null, done: null, error: null, warnings: [],
      x: [], loss: [], ema: [], val: [], lr: [], tps: [], idx: new Map(),
      lastMs: null, sumMs: {}, nMs: 0, samples: [], checkpoints: 0,
    };
    const errSlot = h('div', { testid: 'run-error', hidden: true });
    const head = h('div', { class: 'run-head' });
    const stats = h('div', { class: 'run-stats', testid: 'run-stats' });
    const lossBox = h('div', { class: 'chart', id: 'loss-chart', testid: 'loss-chart', dataset: { points: '0', valPoints: '0' } });
    const lrBox = h('div', { class: 'chart', id: 'lr-chart', testid: 'lr-chart', dataset: { points: '0' } });
    const tpsBox = h('div', { class: 'chart', id: 'tps-chart', testid: 'tps-chart', dataset: { points: '0' } });
    const breakdown = h('div', { class: 'breakdown', testid: 'breakdown' }, h('p', { class: 'muted' }, 'No steps yet.'));
    const samples = h('div', { class: 'samples', testid: 'samples' }, h('p', { class: 'muted' }, 'No samples yet (set “sample every” when configuring).'));
    const warnings = h('ul', { class: 'warnings', testid: 'run-warnings', hidden: true });

    const waiting = () => h('p', { class: 'muted chart-empty' }, 'Waiting for the first step…');
    const root = h('div', { class: 'run-view', testid: 'run-view', dataset: { runId } },
      head, errSlot, stats, warnings,
      h('div', { class: 'grid2' },
        NF.section('Loss', 'loss-card', h('p', { class: 'muted small' }, 'Training loss, its moving average, and validation loss.'), waiting(), lossBox),
        NF.section('Learning rate', 'lr-card', waiting(), lrBox),
        NF.section('Throughput', 'tps-card', waiting(), tpsBox),
        NF.section('Where the time goes', 'breakdown-card', breakdown)),
      NF.section('Recent samples', 'samples-card', samples));

    const lossChart = NF.lineChart(lossBox, {
      yLabel: 'loss', yFormat: (v) => v.toFixed(3),
      series: [
        { label: 'loss', stroke: NF.colors.loss, width: 1 },
        { label: 'EMA loss', stroke: NF.colors.ema, width: 2 },
        { label: 'val loss', stroke: NF.colors.val, width: 2, points: { show: true, size: 6 } },
      ],
    });
    const lrChart = NF.lineChart(lrBox, { yLabel: 'lr', height: 160, yFormat: (v) => v.toExponential(1), series: [{ label: 'learning rate', stroke: NF.colors.lr, width: 2 }] });
    const tpsChart = NF.lineChart(tpsBox, { yLabel: 'tokens/s', height: 160, yFormat: (v) => fmt.si(v), series: [{ label: 'tokens/s', stroke: NF.colors.tps, width: 1.5 }] });

    let drawQueued = false;
    function queueDraw() {
      if (drawQueued) return;
      drawQueued = true;
      setTimeout(() => { drawQueued = false; draw(); }, 150);
    }

    function truncateAfter(step) {
      let n = st.x.length;
      while (n > 0 && st.x[n - 1] > step) n--;
      for (const k of ['x', 'loss', 'ema', 'val', 'lr', 'tps']) st[k].length = n;
      st.idx = new Map(st.x.map((s, i) => [s, i]));
    }

    function onEvent(ev) {
      switch (ev.type) {
        case 'train.start':
          st.start = ev;
          st.done = null;
          if (ev.start_step) truncateAfter(ev.start_step);
          else truncateAfter(0);
          break;
        case 'train.step': {
          if (st.x.length && ev.step <= st.x[st.x.length - 1]) truncateAfter(ev.step - 1);
          st.idx.set(ev.step, st.x.length);
          st.x.push(ev.step);
          st.loss.push(isFinite(ev.loss) ? ev.loss : null);
          st.ema.push(isFinite(ev.loss_ema) ? ev.loss_ema : null);
          st.val.push(null);
          st.lr.push(ev.lr);
          st.tps.push(ev.tokens_per_s);
          if (ev.ms && typeof ev.ms === 'object') {
            st.lastMs = ev.ms;
            for (const [k, v] of Object.entries(ev.ms)) st.sumMs[k] = (st.sumMs[k] || 0) + v;
            st.nMs++;
          }
          st.lastStep = ev;
          break;
        }
        case 'train.eval': {
          let i = st.idx.get(ev.step);
          if (i === undefined && (!st.x.length || ev.step > st.x[st.x.length - 1])) {
            i = st.x.length;
            st.idx.set(ev.step, i);
            st.x.push(ev.step);
            for (const k of ['loss', 'ema', 'val', 'lr', 'tps']) st[k].push(null);
          }
          if (i !== undefined) st.val[i] = ev.val_loss;
          st.lastEval = ev;
          break;
        }
        case 'train.sample':
          st.samples.push(ev);
          if (st.samples.length > 50) st.samples.shift();
          break;
        case 'train.done':
          st.done = ev;
          break;
        case 'checkpoint.saved':
          st.checkpoints++;
          break;
        case 'warning':
          st.warnings.push(ev.message);
          break;
        case 'error':
          st.error = { error: ev.message, hint: ev.hint };
          break;
        default:
          break;
      }
      queueDraw();
    }

    function drawHead() {
      const s = st.summary || { id: runId, status: 'unknown' };
      const running = s.status === 'running';
      const canResume = s.status === 'interrupted' || s.status === 'failed';
      const stopBtn = h('button', { class: 'btn', testid: 'stop-run', disabled: !running, onclick: async () => {
        stopBtn.disabled = true;
        try { await NF.api('POST', `/api/runs/${encodeURIComponent(runId)}/stop`); } catch (e) { NF.showError(errSlot, e); stopBtn.disabled = false; }
      } }, 'Stop');
      const resumeBtn = h('button', { class: 'btn primary', testid: 'resume-run', disabled: !canResume, onclick: async () => {
        resumeBtn.disabled = true;
        try {
          await NF.api('POST', `/api/runs/${encodeURIComponent(runId)}/resume`);
          NF.navigate(`/?run=${encodeURIComponent(runId)}`, true);
        } catch (e) { NF.showError(errSlot, e); resumeBtn.disabled = false; }
      } }, 'Resume');
      NF.fill(head,
        h('div', { class: 'run-title' }, h('h2', { class: 'mono', testid: 'run-id' }, runId),
          h('span', { testid: 'run-status', dataset: { status: s.status } }, NF.badge(s.status))),
        h('div', { class: 'run-actions' }, stopBtn, resumeBtn));
      const err = st.error || (s.status === 'failed' && (s.error ? { error: s.error, hint: s.hint } : { error: 'The run failed: its process ended without finishing.', hint: 'Look at the run folder’s studio.log; resume it from its last checkpoint.' }));
      if (s.status === 'failed' || (st.error && s.status !== 'running')) NF.showError(errSlot, err);
      else NF.showError(errSlot, null);
    }

    function draw() {
      const s = st.summary || {};
      const start = st.start || {};
      const totalSteps = start.steps || s.steps;
      const step = st.x.length ? st.lastStep ? st.lastStep.step : s.step : s.step;
      const last = st.lastStep || {};
      const remaining = totalSteps && step && last.ms_per_step && s.status === 'running' ? ((totalSteps - step) * last.ms_per_step) / 1000 : null;
      NF.fill(stats,
        h('div', { class: 'progress-row' },
          NF.progressBar(step || 0, totalSteps || 0, 'run-progress'),
          h('span', { class: 'small', testid: 'run-step' }, `step ${fmt.count(step || 0)} / ${fmt.count(totalSteps)}`)),
        h('div', { class: 'stat-grid' },
          stat('loss', fmt.loss(last.loss !== undefined ? last.loss : s.loss), 'stat-loss'),
          stat('EMA loss', fmt.loss(last.loss_ema !== undefined ? last.loss_ema : s.loss_ema), 'stat-ema'),
          stat('val loss', fmt.loss(st.lastEval ? st.lastEval.val_loss : s.val_loss), 'stat-val'),
          stat('learning rate', fmt.lr(last.lr !== undefined ? last.lr : s.lr), 'stat-lr'),
          stat('tokens/s', fmt.si(last.tokens_per_s !== undefined ? last.tokens_per_s : s.tokens_per_s), 'stat-tps'),
          stat('per step', fmt.ms(last.ms_per_step), 'stat-ms'),
          stat('elapsed', fmt.elapsed(s.started, s.ended), 'stat-elapsed'),
          stat('remaining', remaining === null ? '—' : fmt.duration(remaining), 'stat-eta')),
        NF.kv([
          ['method', start.method || s.method || '—'],
          ['precision', (start.precision || s.precision) ? `${start.precision || s.precision}${start.isa ? ` on ${start.isa}` : ''}${start.kernel ? ` (${start.kernel} kernel)` : ''}` : '—'],
          ['model', s.model || '—'],
          ['trainable', start.trainable_params ? `${fmt.si(start.trainable_params)} of ${fmt.si(start.total_params)} params` : '—'],
          ['tokens/step', start.tokens_per_step ? fmt.count(start.tokens_per_step) : '—'],
          ['train / val tokens', start.train_tokens ? `${fmt.count(start.train_tokens)} / ${fmt.count(start.val_tokens)}` : '—'],
          ['checkpoints', String(st.checkpoints)],
          ['output', st.done ? st.done.output : s.output || '—'],
          ['ended', st.done ? `${st.done.reason} after ${fmt.duration(st.done.wall_s)}` : s.ended ? fmt.time(s.ended) : '—'],
        ], 'run-facts'));

      for (const p of root.querySelectorAll('.chart-empty')) p.hidden = st.x.length > 0;
      lossChart.setData([st.x, st.loss, st.ema, st.val]);
      lossBox.dataset.points = String(st.loss.filter((v) => v !== null).length);
      lossBox.dataset.valPoints = String(st.val.filter((v) => v !== null).length);
      lrChart.setData([st.x, st.lr]);
      lrBox.dataset.points = String(st.x.length);
      tpsChart.setData([st.x, st.tps]);
      tpsBox.dataset.points = String(st.x.length);
      drawBreakdown();
      drawSamples();
      warnings.hidden = st.warnings.length === 0;
      NF.fill(warnings, st.warnings.slice(-5).map((w) => h('li', {}, '⚠ ', w)));
    }

    function stat(label, value, testid) {
      return h('div', { class: 'stat', testid }, h('div', { class: 'stat-value' }, value), h('div', { class: 'stat-label' }, label));
    }

    function drawBreakdown() {
      const mean = st.done && st.done.ms ? st.done.ms : st.nMs ? Object.fromEntries(Object.entries(st.sumMs).map(([k, v]) => [k, v / st.nMs])) : null;
      if (!mean) return;
      const keys = MS_PARTS.filter((k) => k in mean).concat(Object.keys(mean).filter((k) => !MS_PARTS.includes(k)));
      const total = keys.reduce((a, k) => a + (mean[k] || 0), 0) || 1;
      const color = (k) => NF.colors[k === 'loss' ? 'loss_c' : k] || '#868e96';
      const bar = h('div', { class: 'stack-bar', testid: 'breakdown-bar' },
        keys.map((k) => h('div', { class: 'stack-seg', title: `${k}: ${fmt.ms(mean[k])}`, style: { width: `${(100 * mean[k]) / total}%`, background: color(k) } })));
      const table = h('table', { class: 'table compact' },
        h('thead', {}, h('tr', {}, h('th', {}, 'component'), h('th', { class: 'num' }, 'mean / step'), h('th', { class: 'num' }, 'share'), h('th', { class: 'num' }, 'last step'))),
        h('tbody', {}, keys.map((k) => h('tr', { testid: 'breakdown-row', dataset: { part: k } },
          h('td', {}, h('span', { class: 'swatch', style: { background: color(k) } }), k),
          h('td', { class: 'num' }, fmt.ms(mean[k])),
          h('td', { class: 'num' }, `${((100 * mean[k]) / total).toFixed(1)}%`),
          h('td', { class: 'num' }, st.lastMs ? fmt.ms(st.lastMs[k]) : '—')))));
      // Utilization is relative to the GEMM peak of the run's own arithmetic (f32 or bf16).
      const d = st.done;
      const peak = d && d.precision ? `measured ${d.precision} GEMM peak` : 'measured peak';
      const util = !d || !d.utilization ? ''
        : d.peak_under_measured ? `, at least the ${peak} (peak under-measured)`
        : `, ${(100 * d.utilization).toFixed(0)}% of the ${peak}`;
      NF.fill(breakdown, bar, table,
        h('p', { class: 'muted small' }, `${fmt.ms(total)} per step on average${util}.`));
    }

    function drawSamples() {
      if (!st.samples.length) return;
      NF.fill(samples, st.samples.slice(-6).reverse().map((s) => h('div', { class: 'sample', testid: 'sample' },
        h('div', { class: 'muted small' }, `step ${fmt.count(s.step)}`),
        h('div', { class: 'sample-text' }, h('strong', {}, s.prompt), s.text.startsWith(s.prompt) ? s.text.slice(s.prompt.length) : s.text))));
    }

    function setSummary(s) {
      const prev = st.summary ? st.summary.status : null;
      st.summary = Object.assign({}, st.summary || {}, s);
      drawHead();
      if (prev !== st.summary.status) {
        // The lines before a status change are already in: show them with the new status.
        draw();
        onStatus(st.summary);
      } else {
        queueDraw();
      }
    }

    // The runs list polls summaries too, and one may run ahead of this run's stream: its
    // status can say finished before the stream has delivered the final events, which
    // then show a poll late. The stream sends every status change after the events that
    // led to it, so only the stream changes the status here; a list summary updates the
    // rest while it agrees.
    function listSummary(s) {
      if (!st.summary || st.summary.status === s.status) setSummary(s);
    }

    NF.api('GET', `/api/runs/${encodeURIComponent(runId)}`).then(listSummary).catch((e) => NF.showError(errSlot, e));
    NF.sse(`/api/runs/${encodeURIComponent(runId)}/events`, { ndjson: onEvent, status: setSummary },
      () => st.summary && st.summary.status !== 'running');
    drawHead();
    return { root, listSummary };
  }

  NF.pages['/'] = {
    name: 'dashboard',
    title: 'Dashboard',
    async render(root) {
      const errSlot = h('div', { hidden: true });
      const tbody = h('tbody', { testid: 'runs-body' });
      const table = h('table', { class: 'table', testid: 'runs-table' },
        h('thead', {}, h('tr', {}, ['run', 'status', 'method', 'model', 'step', 'loss (EMA)', 'val loss', 'started'].map((t) => h('th', {}, t)))),
        tbody);
      const counts = h('span', { class: 'muted small', testid: 'run-counts' });
      const detail = h('div', { testid: 'run-detail' });
      root.append(errSlot,
        NF.section(null, 'runs-card',
          h('div', { class: 'row spread' }, h('h2', {}, 'Runs ', counts), h('a', { class: 'btn primary', href: '/configure', 'data-link': true, testid: 'new-run' }, 'New run')),
          h('div', { class: 'table-wrap' }, table)),
        detail);

      let runs = [];
      let selected = NF.query().get('run');
      let view = null;

      function select(id) {
        if (id === selected && view) return;
        selected = id;
        history.replaceState(null, '', `/?run=${encodeURIComponent(id)}`);
        // Leaving one run view for another: close only the previous run's streams/charts.
        openView();
        drawList();
      }

      function openView() {
        NF.clear(detail);
        if (view && view.cleanups) for (const f of view.cleanups) f();
        if (!selected) { detail.append(h('p', { class: 'muted' }, 'Select a run to see its charts.')); return; }
        const before = NF.cleanup.length;
        view = runView(selected, () => refresh());
        view.cleanups = NF.cleanup.splice(before);
        NF.cleanup.push(() => view && view.cleanups.forEach((f) => f()));
        detail.append(view.root);
      }

      function drawList() {
        const by = { running: 0, finished: 0, failed: 0, interrupted: 0 };
        for (const r of runs) by[r.status] = (by[r.status] || 0) + 1;
        counts.textContent = `· ${by.running} running, ${by.finished} finished, ${by.interrupted} interrupted, ${by.failed} failed`;
        NF.clear(tbody);
        if (!runs.length) tbody.append(h('tr', {}, h('td', { colspan: 8, class: 'muted' }, 'No runs yet. Start one from Configure.')));
        for (const r of runs) tbody.append(runRow(r, r.id === selected, select));
      }

      async function refresh() {
        try {
          runs = await NF.loadRuns();
          NF.showError(errSlot, null);
        } catch (e) {
          NF.showError(errSlot, e);
          return;
        }
        drawList();
        if (!selected && runs.length) {
          const pick = runs.find((r) => r.status === 'running') || runs[0];
          select(pick.id);
        }
        if (view && view.listSummary) {
          const s = runs.find((r) => r.id === selected);
          if (s) view.listSummary(s);
        }
      }

      if (selected) openView();
      await refresh();
      NF.every(3000, refresh);
    },
  };
})();
