// Generate / chat: a model, optionally a run's adapter, streamed tokens, sampling settings.
// Text mode continues a prompt; chat mode keeps a conversation and sends it whole each
// turn (the server renders it with the chat template; nothing is kept between requests).
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
      const system = h('input', { id: 'gen-system', testid: 'gen-system', placeholder: 'optional, e.g. “Answer from the handbook.”' });
      const template = h('select', { id: 'gen-template', testid: 'gen-template' });
      NF.options(template, ['chatml', 'llama2', 'llama3'], '', 'the model’s own');
      const maxTokens = h('input', { type: 'number', min: 1, value: 128, id: 'gen-max-tokens', testid: 'gen-max-tokens' });
      const temperature = h('input', { type: 'number', min: 0, step: 0.05, value: 0.8, id: 'gen-temperature', testid: 'gen-temperature' });
      const topP = h('input', { type: 'number', min: 0, max: 1, step: 0.05, value: 0.95, id: 'gen-top-p', testid: 'gen-top-p' });
      const seed = h('input', { type: 'number', min: 0, id: 'gen-seed', testid: 'gen-seed', placeholder: '0' });
      const go = h('button', { type: 'submit', class: 'btn primary', id: 'gen-start', testid: 'gen-start' }, 'Generate');
      const reset = h('button', { type: 'button', class: 'btn', testid: 'chat-new', hidden: true }, 'New conversation');
      const stop = h('button', { type: 'button', class: 'btn', testid: 'gen-stop', hidden: true }, 'Stop');
      const promptLabel = h('span', { class: 'field-label' }, 'Prompt');
      const chatFields = h('div', { class: 'form-grid', hidden: true },
        NF.field('System message', system), NF.field('Chat template', template));
      const output = h('div', { class: 'gen-output', id: 'gen-output', testid: 'gen-output', dataset: { state: 'idle', tokens: '0' } });
      const log = h('div', { class: 'chat-log', testid: 'chat-log', hidden: true },
        h('p', { class: 'muted' }, 'Start the conversation below.'));
      const stats = h('div', { testid: 'gen-stats', class: 'muted small' });
      const outErr = h('div', { hidden: true, testid: 'gen-job-error' });
      // The finished turns of the conversation, oldest first.
      let history = [];

      const form = h('form', { class: 'form', testid: 'generate-form' },
        NF.field('Model', model),
        NF.field('Adapter', run, 'A finished run’s LoRA adapter on top of the model (optional).'),
        h('label', { class: 'check' }, chat, ' Chat (a conversation in the model’s chat template)'),
        chatFields,
        h('div', { class: 'field' }, promptLabel, prompt),
        h('div', { class: 'form-grid' },
          NF.field('Max tokens', maxTokens), NF.field('Temperature', temperature, '0 = greedy'),
          NF.field('Top-p', topP), NF.field('Seed', seed, 'same seed and settings, same text')),
        h('div', { class: 'row' }, go, stop, reset));
      root.append(errSlot, h('div', { class: 'grid-generate' },
        NF.section('Settings', 'generate-card', form),
        NF.section('Output', 'output-card', output, log, stats, outErr)));

      const newConversation = () => {
        history = [];
        NF.fill(log, h('p', { class: 'muted' }, 'Start the conversation below.'));
        log.dataset.turns = '0';
        stats.textContent = '';
      };
      chat.addEventListener('change', () => {
        const on = chat.checked;
        chatFields.hidden = !on;
        reset.hidden = !on;
        log.hidden = !on;
        output.hidden = on;
        promptLabel.textContent = on ? 'Message' : 'Prompt';
        go.textContent = on ? 'Send' : 'Generate';
        prompt.placeholder = on ? 'Ask something' : 'Once upon a time';
      });
      reset.addEventListener('click', newConversation);

      const bubble = (role, text) => h('div', { class: `msg ${role}`, testid: 'chat-msg', dataset: { role } },
        h('div', { class: 'msg-role' }, role === 'user' ? 'You' : 'Model'), h('div', { class: 'msg-text' }, text));

      form.addEventListener('submit', async (e) => {
        e.preventDefault();
        NF.showError(errSlot, null);
        NF.showError(outErr, null);
        if (!model.value) { NF.showError(errSlot, { error: 'Pick a model.', hint: 'Import one on the Models page first.' }); return; }
        const inChat = chat.checked;
        const said = prompt.value || (inChat ? '' : 'Once upon a time');
        if (inChat && !said.trim()) { NF.showError(errSlot, { error: 'Write a message.', hint: 'Type it in the Message box.' }); return; }
        const body = { model: model.value, prompt: said };
        if (run.value) body.run = run.value;
        if (inChat) {
          body.chat = true;
          body.history = history.slice();
          if (system.value.trim()) body.system = system.value.trim();
          if (template.value) body.chat_template = template.value;
        }
        if (maxTokens.value) body.max_tokens = Number(maxTokens.value);
        if (temperature.value !== '') body.temperature = Number(temperature.value);
        if (topP.value !== '') body.top_p = Number(topP.value);
        if (seed.value !== '') body.seed = Number(seed.value);
        go.disabled = true;
        const text = h('span', { class: 'gen-text', testid: 'gen-text' });
        const caret = h('span', { class: 'caret' });
        let reply = null;
        if (inChat) {
          if (!history.length) NF.clear(log);
          reply = bubble('assistant', [text, caret]);
          log.append(bubble('user', said), reply);
          reply.scrollIntoView({ block: 'nearest' });
        } else {
          NF.fill(output, h('span', { class: 'gen-prompt' }, said), text, caret);
        }
        const target = inChat ? log : output;
        target.dataset.state = 'streaming';
        output.dataset.tokens = '0';
        stats.textContent = 'Loading the model…';
        let n = 0;
        const finish = () => { caret.remove(); go.disabled = false; stop.hidden = true; stop.onclick = null; };
        const failed = (err) => {
          finish();
          target.dataset.state = 'failed';
          stats.textContent = 'Failed.';
          // A failed turn is not part of the conversation: drop its two bubbles.
          if (reply) { reply.previousSibling.remove(); reply.remove(); }
          NF.showError(outErr, err);
        };
        try {
          const r = await NF.api('POST', '/api/generate', body);
          output.dataset.job = r.job;
          stop.hidden = false;
          stop.disabled = false;
          stop.onclick = () => {
            stop.disabled = true;
            NF.api('POST', `/api/jobs/${r.job}/cancel`).catch(() => {});
          };
          let done = null;
          NF.followJob(r.job, (ev) => {
            if (ev.type === 'generate.token') {
              text.append(ev.text);
              n++;
              output.dataset.tokens = String(n);
              stats.textContent = `${n} tokens…`;
            } else if (ev.type === 'generate.done') {
              done = ev;
              // The stream's text is authoritative (a token's text may be completed by the next);
              // a reply's leading blank lines are only the template's line break.
              text.textContent = inChat ? ev.text.replace(/^\s+/, '') : ev.text;
            }
          }, (s) => {
            if (s && s.status === 'cancelled') {
              // Stopped before any text (while the model loaded): nothing to keep.
              failed(null);
              stats.textContent = 'Stopped.';
              target.dataset.state = 'stopped';
              return;
            }
            if (!(s && s.status === 'ok')) { failed(NF.jobError(s)); return; }
            finish();
            target.dataset.state = done && done.stop === 'cancelled' ? 'stopped' : 'done';
            stats.textContent = done
              ? `${done.stop === 'cancelled' ? 'Stopped' : `Done (${done.stop})`}: ${done.generated_tokens} tokens · prompt ${done.prompt_tokens} tokens in ${fmt.ms(done.prompt_ms)} · ${done.decode_tokens_per_s.toFixed(1)} tokens/s decoding`
              : 'Done.';
            if (inChat) {
              history.push({ role: 'user', content: said }, { role: 'assistant', content: text.textContent });
              log.dataset.turns = String(history.length / 2);
              prompt.value = '';
            }
          });
        } catch (err) {
          failed(err);
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
