// Generate / chat: a model, optionally a run's adapter, streamed tokens, sampling settings.
'use strict';

(() => {
  const { h, fmt } = NF;

  NF.pages['/generate'] = {
    name: 'generate',
    title: 'Generate',
    async render(root) {
      const q = NF.query();
      const errSlot = h('div', { testid: 'generate-error', hidden: true });
      const model = h('select', { id: 'gen-model', testid: 'gen-model' });
      const run = h('select', { id: 'gen-run', testid: 'gen-run' });
      const prompt = h('textarea', { id: 'gen-prompt', testid: 'gen-prompt', rows: 4, placeholder: 'Once upon a time' });
      const chat = h('input', { type: 'checkbox', id: 'gen-chat', testid: 'gen-chat' });
      const maxTokens = h('input', { type: 'number', min: 1, value: 128, id: 'gen-max-tokens', testid: 'gen-max-tokens' });
      const temperature = h('input', { type: 'number', min: 0, step: 0.05, value: 0.8, id: 'gen-temperature', testid: 'gen-temperature' });
      const topP = h('input', { type: 'number', min: 0, max: 1, step: 0.05, value: 0.95, id: 'gen-top-p', testid: 'gen-top-p' });
      const seed = h('input', { type: 'number', min: 0, id: 'gen-seed', testid: 'gen-seed', placeholder: '0' });
      const go = h('button', { type: 'submit', class: 'btn primary', id: 'gen-start', testid: 'gen-start' }, 'Generate');
      const output = h('div', { class: 'gen-output', id: 'gen-output', testid: 'gen-output', dataset: { state: 'idle', tokens: '0' } });
      const stats = h('div', { testid: 'gen-stats', class: 'muted small' });
      const outErr = h('div', { hidden: true, testid: 'gen-job-error' });

      const form = h('form', { class: 'form', testid: 'generate-form' },
        NF.field('Model', model),
        NF.field('Adapter', run, 'A finished run’s LoRA adapter on top of the model (optional).'),
        h('div', { class: 'field' }, h('span', { class: 'field-label' }, 'Prompt'), prompt),
        h('label', { class: 'check' }, chat, ' Chat (apply the model’s chat template)'),
        h('div', { class: 'form-grid' },
          NF.field('Max tokens', maxTokens), NF.field('Temperature', temperature, '0 = greedy'),
          NF.field('Top-p', topP), NF.field('Seed', seed, 'same seed and settings, same text')),
        h('div', { class: 'row' }, go));
      root.append(errSlot, h('div', { class: 'grid-generate' },
        NF.section('Settings', 'generate-card', form),
        NF.section('Output', 'output-card', output, stats, outErr)));

      form.addEventListener('submit', async (e) => {
        e.preventDefault();
        NF.showError(errSlot, null);
        NF.showError(outErr, null);
        if (!model.value) { NF.showError(errSlot, { error: 'Pick a model.', hint: 'Import one on the Models page first.' }); return; }
        const body = { model: model.value, prompt: prompt.value || 'Once upon a time' };
        if (run.value) body.run = run.value;
        if (chat.checked) body.chat = true;
        if (maxTokens.value) body.max_tokens = Number(maxTokens.value);
        if (temperature.value !== '') body.temperature = Number(temperature.value);
        if (topP.value !== '') body.top_p = Number(topP.value);
        if (seed.value !== '') body.seed = Number(seed.value);
        go.disabled = true;
        NF.fill(output, chat.checked ? null : h('span', { class: 'gen-prompt' }, body.prompt));
        const text = h('span', { class: 'gen-text', testid: 'gen-text' });
        const caret = h('span', { class: 'caret' });
        output.append(text, caret);
        output.dataset.state = 'streaming';
        output.dataset.tokens = '0';
        stats.textContent = 'Loading the model…';
        let n = 0;
        const finish = () => { caret.remove(); go.disabled = false; };
        try {
          const r = await NF.api('POST', '/api/generate', body);
          output.dataset.job = r.job;
          let done = null;
          NF.followJob(r.job, (ev) => {
            if (ev.type === 'generate.token') {
              text.append(ev.text);
              n++;
              output.dataset.tokens = String(n);
              stats.textContent = `${n} tokens…`;
            } else if (ev.type === 'generate.done') {
              done = ev;
              // The stream's text is authoritative (a token's text may be completed by the next).
              text.textContent = ev.text;
            }
          }, (s) => {
            finish();
            if (s && s.status === 'ok') {
              output.dataset.state = 'done';
              stats.textContent = done
                ? `Done (${done.stop}): ${done.generated_tokens} tokens · prompt ${done.prompt_tokens} tokens in ${fmt.ms(done.prompt_ms)} · ${done.decode_tokens_per_s.toFixed(1)} tokens/s decoding`
                : 'Done.';
            } else {
              output.dataset.state = 'failed';
              stats.textContent = 'Failed.';
              NF.showError(outErr, NF.jobError(s));
            }
          });
        } catch (err) {
          finish();
          output.dataset.state = 'failed';
          stats.textContent = 'Failed.';
          NF.showError(outErr, err);
        }
      });

      try {
        const [models, runs] = await Promise.all([NF.loadModels(), NF.loadRuns()]);
        NF.options(model, models.map((m) => ({ value: m.name, label: m.name })), q.get('model') || (models[0] && models[0].name), models.length ? undefined : 'no models yet');
        const usable = runs.filter((r) => r.status === 'finished' || r.status === 'interrupted');
        NF.options(run, usable.map((r) => ({ value: r.id, label: `${r.id} · ${r.method || '?'} · ${r.status}${r.model ? ' · ' + String(r.model).split('/').pop() : ''}` })), q.get('run') || '', 'none (the base model)');
      } catch (e) {
        NF.showError(errSlot, e);
      }
    },
  };
})();
