// Configure: model, dataset, method, precision and schedule, an up-front estimate, then start the run.
'use strict';

(() => {
  const { h, fmt } = NF;

  // The POST /api/train (and /api/train/estimate) body from the form's values.
  NF.trainBody = function trainBody(v) {
    const num = (x) => (x === '' || x === null || x === undefined ? undefined : Number(x));
    const body = {
      model: v.model,
      tokenizer: v.tokenizer || undefined,
      dataset: v.dataset,
      method: v.method,
      lora_rank: v.method === 'lora' ? num(v.rank) : undefined,
      steps: num(v.steps),
      lr: num(v.lr),
      schedule: v.schedule || undefined,
      warmup: num(v.warmup),
      eval_every: num(v.eval_every),
      sample_every: num(v.sample_every),
      save_every: num(v.save_every),
      batch_size: num(v.batch_size),
      seq_len: num(v.seq_len),
      precision: v.precision && v.precision !== 'auto' ? v.precision : undefined,
    };
    for (const k of Object.keys(body)) if (body[k] === undefined || (typeof body[k] === 'number' && isNaN(body[k]))) delete body[k];
    return body;
  };

  function memRows(mem) {
    const parts = ['weights', 'trainable', 'gradients', 'optimizer', 'activations'];
    const total = mem.total || parts.reduce((a, k) => a + (mem[k] || 0), 0) || 1;
    const colors = { weights: '#4c6ef5', trainable: '#15aabf', gradients: '#fab005', optimizer: '#e64980', activations: '#7950f2' };
    return h('div', { testid: 'estimate-memory' },
      h('div', { class: 'stack-bar' }, parts.filter((k) => mem[k]).map((k) => h('div', { class: 'stack-seg', title: `${k}: ${fmt.bytes(mem[k])}`, style: { width: `${(100 * mem[k]) / total}%`, background: colors[k] } }))),
      h('table', { class: 'table compact' }, h('tbody', {},
        parts.map((k) => h('tr', { testid: 'memory-row', dataset: { part: k } }, h('td', {}, h('span', { class: 'swatch', style: { background: colors[k] } }), k), h('td', { class: 'num' }, fmt.bytes(mem[k])))),
        h('tr', { class: 'total' }, h('td', {}, 'total'), h('td', { class: 'num', testid: 'estimate-memory-total' }, fmt.bytes(mem.total))))));
  }

  NF.pages['/configure'] = {
    name: 'configure',
    title: 'Configure a run',
    async render(root) {
      const q = NF.query();
      const errSlot = h('div', { testid: 'configure-error', hidden: true });
      const model = h('select', { id: 'cfg-model', testid: 'cfg-model', required: true });
      const tokenizer = h('input', { id: 'cfg-tokenizer', testid: 'cfg-tokenizer', placeholder: 'from the model (optional path)' });
      const dataset = h('select', { id: 'cfg-dataset', testid: 'cfg-dataset', required: true });
      const lora = h('input', { type: 'radio', name: 'method', value: 'lora', id: 'cfg-method-lora', testid: 'cfg-method-lora', checked: true });
      const full = h('input', { type: 'radio', name: 'method', value: 'full', id: 'cfg-method-full', testid: 'cfg-method-full' });
      const rank = h('input', { type: 'number', min: 1, max: 512, value: 8, id: 'cfg-rank', testid: 'cfg-rank' });
      const steps = h('input', { type: 'number', min: 1, value: 200, id: 'cfg-steps', testid: 'cfg-steps' });
      const lr = h('input', { type: 'number', step: 'any', min: 0, placeholder: '2e-3 (LoRA) / 1e-4 (full)', id: 'cfg-lr', testid: 'cfg-lr' });
      const precision = h('select', { id: 'cfg-precision', testid: 'cfg-precision' });
      NF.options(precision, [
        { value: 'auto', label: 'auto (bf16 where the CPU has native bf16, else f32)' },
        { value: 'f32', label: 'f32' },
        { value: 'bf16', label: 'bf16 (emulated, slower, without native bf16)' },
      ], 'auto');
      const schedule = h('select', { id: 'cfg-schedule', testid: 'cfg-schedule' });
      NF.options(schedule, ['cosine', 'linear', 'constant'], 'cosine');
      const warmup = h('input', { type: 'number', min: 0, value: 10, id: 'cfg-warmup', testid: 'cfg-warmup' });
      const evalEvery = h('input', { type: 'number', min: 1, value: 50, id: 'cfg-eval-every', testid: 'cfg-eval-every' });
      const sampleEvery = h('input', { type: 'number', min: 0, value: 0, id: 'cfg-sample-every', testid: 'cfg-sample-every' });
      const saveEvery = h('input', { type: 'number', min: 1, placeholder: '100', id: 'cfg-save-every', testid: 'cfg-save-every' });
      const batch = h('input', { type: 'number', min: 1, value: 4, id: 'cfg-batch', testid: 'cfg-batch' });
      const seqLen = h('input', { type: 'number', min: 8, value: 256, id: 'cfg-seq-len', testid: 'cfg-seq-len' });
      const estimateBtn = h('button', { type: 'button', class: 'btn', id: 'cfg-estimate', testid: 'cfg-estimate' }, 'Estimate');
      const startBtn = h('button', { type: 'submit', class: 'btn primary', id: 'cfg-start', testid: 'cfg-start' }, 'Start training');
      const estimate = h('div', { id: 'estimate', testid: 'estimate', dataset: { state: 'none' } },
        h('p', { class: 'muted' }, 'Press Estimate to see the memory and time this run needs before starting it.'));
      const rankField = NF.field('LoRA rank', rank);

      const form = h('form', { class: 'form', testid: 'configure-form' },
        h('div', { class: 'form-grid' },
          NF.field('Model', model, 'A model in the store (import one on the Models page).'),
          NF.field('Tokenizer', tokenizer),
          NF.field('Dataset', dataset, 'A dataset made on the Ingest page.'),
          h('div', { class: 'field' }, h('span', { class: 'field-label' }, 'Method'),
            h('div', { class: 'radio-row' },
              h('label', {}, lora, ' LoRA adapter'),
              h('label', {}, full, ' Full fine-tune'))),
          rankField,
          NF.field('Precision', precision, 'How the matrix products multiply; weights and optimizer stay f32. A resumed run keeps its own.'),
          NF.field('Steps', steps),
          NF.field('Learning rate', lr, 'Peak; empty for the method’s default.'),
          NF.field('Schedule', schedule),
          NF.field('Warmup steps', warmup),
          NF.field('Validate every', evalEvery, 'steps'),
          NF.field('Sample every', sampleEvery, 'steps (0 = never)'),
          NF.field('Checkpoint every', saveEvery, 'steps (a stopped run resumes from its last checkpoint)'),
          NF.field('Batch size', batch),
          NF.field('Sequence length', seqLen, 'tokens')),
        h('div', { class: 'row' }, estimateBtn, startBtn));
      root.append(errSlot, h('div', { class: 'grid-configure' },
        NF.section('Settings', 'settings-card', form),
        NF.section('Estimate', 'estimate-card', estimate)));

      const method = () => (full.checked ? 'full' : 'lora');
      const syncMethod = () => { rankField.hidden = method() !== 'lora'; rank.disabled = method() !== 'lora'; };
      lora.addEventListener('change', syncMethod);
      full.addEventListener('change', syncMethod);
      syncMethod();

      const values = () => ({
        model: model.value, tokenizer: tokenizer.value.trim(), dataset: dataset.value, method: method(), rank: rank.value, precision: precision.value,
        steps: steps.value, lr: lr.value, schedule: schedule.value, warmup: warmup.value,
        eval_every: evalEvery.value, sample_every: sampleEvery.value, save_every: saveEvery.value, batch_size: batch.value, seq_len: seqLen.value,
      });
      const check = () => {
        if (!model.value) throw { error: 'Pick a model.', hint: 'Import one on the Models page first.' };
        if (!dataset.value) throw { error: 'Pick a dataset.', hint: 'Make one on the Ingest page first.' };
      };
      // Any change makes the estimate stale.
      form.addEventListener('input', () => { if (estimate.dataset.state === 'ready') estimate.dataset.state = 'stale'; estimate.classList.add('stale'); });

      estimateBtn.addEventListener('click', async () => {
        try { check(); } catch (e) { NF.showError(errSlot, e); return; }
        NF.showError(errSlot, null);
        estimateBtn.disabled = true;
        estimate.dataset.state = 'loading';
        estimate.classList.remove('stale');
        NF.fill(estimate, h('p', { class: 'muted' }, h('span', { class: 'spinner' }), ' Estimating (a dry run of the trainer)…'));
        try {
          let plan = await NF.api('POST', '/api/train/estimate', NF.trainBody(values()));
          if (plan && plan.plan) plan = plan.plan;
          showPlan(plan);
        } catch (e) {
          estimate.dataset.state = 'error';
          NF.fill(estimate, NF.errorBox(e));
        } finally {
          estimateBtn.disabled = false;
        }
      });

      function showPlan(p) {
        const mem = p.memory || {};
        NF.fill(estimate,
          h('div', { class: 'stat-grid' },
            h('div', { class: 'stat', testid: 'estimate-memory-stat' }, h('div', { class: 'stat-value' }, fmt.bytes(mem.total)), h('div', { class: 'stat-label' }, 'memory')),
            h('div', { class: 'stat', testid: 'estimate-time' }, h('div', { class: 'stat-value' }, fmt.duration(p.estimated_s)), h('div', { class: 'stat-label' }, 'estimated time')),
            h('div', { class: 'stat' }, h('div', { class: 'stat-value' }, fmt.ms(p.ms_per_step)), h('div', { class: 'stat-label' }, 'per step'))),
          NF.kv([
            ['method', p.method],
            ['precision', p.precision ? `${p.precision}${p.isa ? ` on ${p.isa}` : ''}` : '—'],
            ['trainable', `${fmt.si(p.trainable_params)} of ${fmt.si(p.total_params)} params (${p.total_params ? ((100 * p.trainable_params) / p.total_params).toFixed(2) : '?'}%)`],
            ['steps', fmt.count(p.steps)],
            ['tokens / step', fmt.count(p.tokens_per_step)],
            ['compute / step', p.flops_per_step ? `${fmt.si(p.flops_per_step).replace(/([KMGT])$/, ' $1')}FLOP` : '—'],
          ], 'estimate-facts'),
          h('h3', {}, 'Memory'),
          memRows(mem));
        estimate.dataset.state = 'ready';
        estimate.dataset.memory = String(mem.total || 0);
        estimate.dataset.seconds = String(p.estimated_s || 0);
      }

      form.addEventListener('submit', async (e) => {
        e.preventDefault();
        try { check(); } catch (err) { NF.showError(errSlot, err); return; }
        NF.showError(errSlot, null);
        startBtn.disabled = true;
        startBtn.textContent = 'Starting…';
        try {
          const r = await NF.api('POST', '/api/train', NF.trainBody(values()));
          NF.navigate(`/?run=${encodeURIComponent(r.id)}`);
        } catch (err) {
          NF.showError(errSlot, err);
          startBtn.disabled = false;
          startBtn.textContent = 'Start training';
        }
      });

      try {
        const [models, datasets] = await Promise.all([NF.loadModels(), NF.loadDatasets()]);
        NF.options(model, models.map((m) => ({ value: m.name, label: `${m.name} (${m.format}, ${fmt.bytes(m.bytes)})` })), q.get('model') || (models[0] && models[0].name), models.length ? undefined : 'no models yet');
        NF.options(dataset, datasets.map((d) => ({ value: d.name, label: `${d.name} (${fmt.si(d.train_tokens)} tokens)` })), q.get('dataset') || (datasets[0] && datasets[0].name), datasets.length ? undefined : 'no datasets yet');
      } catch (e) {
        NF.showError(errSlot, e);
      }
    },
  };
})();
