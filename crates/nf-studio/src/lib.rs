//! `nf-studio`: the local web app behind `neuralforge studio`.
//!
//! The studio does no compute. It serves embedded pages, spawns `neuralforge` subprocesses
//! for every piece of work, and shows what they write: a training run's
//! `runs/<id>/events.ndjson` (tailed from disk, so runs started from a terminal show up
//! too and a restarted studio reattaches), or a short job's NDJSON stdout.
//!
//! # Security
//!
//! - The server binds 127.0.0.1 unless `--host` names another address (then it warns).
//! - A random 256-bit token is made at each start and printed in the URL
//!   (`http://127.0.0.1:PORT/?token=T`). Every route, pages and assets included, needs it:
//!   a `?token=T` query on a page (answered with a `nf_studio` cookie, `HttpOnly`,
//!   `SameSite=Strict`, and a redirect to the same path without the token), the cookie, or
//!   `Authorization: Bearer T`. Without it: 401.
//! - `Host` must name the bound address (or `localhost` / `127.0.0.1` / `[::1]` with the
//!   bound port when bound to loopback): otherwise 403, which stops DNS rebinding.
//! - An `Origin` header, when present, must be the studio's own origin, and
//!   `Sec-Fetch-Site: cross-site` is refused: otherwise 403. No CORS headers are ever sent.
//!
//! # HTTP API
//!
//! JSON in and out. A failure is a 4xx/5xx with `{"error": "...", "hint": "..."|null}`;
//! when it comes from the CLI these are its `error:` and `hint:` lines.
//!
//! Pages (`GET`, all the same `index.html` shell; `app.js` routes on the path): `/`
//! (dashboard), `/configure`, `/ingest`, `/models`, `/generate`, `/audit`. Assets:
//! `/assets/<file>` for the files in `assets/`.
//!
//! | route | what it does |
//! |---|---|
//! | `GET /api/info` | `{version, home}` |
//! | `GET /api/runs` | run summaries, newest first (see below) |
//! | `GET /api/runs/{id}` | one summary plus `config` (its `run.json`, or null) |
//! | `GET /api/runs/{id}/events` | SSE: every line of `events.ndjson` as `event: ndjson`, then new lines as they are written; `event: status` with the summary at the start and whenever the status changes |
//! | `POST /api/runs/{id}/stop` | SIGTERM to the run's process (it saves a checkpoint and ends `interrupted`); 409 when not running |
//! | `POST /api/runs/{id}/resume` | spawns `train --resume`; `{id}`; 409 when running |
//! | `POST /api/train` | body: a [`TrainRequest`](api::TrainRequest); spawns `train --out runs/<id>`; `{id}` |
//! | `POST /api/train/estimate` | the same body; runs `train --dry-run`; the `train.plan` event's fields |
//! | `GET /api/jobs` | job summaries, newest first |
//! | `GET /api/jobs/{id}` | one job summary plus `events` (the NDJSON lines parsed) |
//! | `GET /api/jobs/{id}/events` | SSE: each stdout line as `event: ndjson`; at the end `event: done` with the job summary |
//! | `PUT /api/uploads/{upload}/{name}` | raw file body, saved as `<home>/uploads/<upload>/<name>`; `{upload, path}` |
//! | `POST /api/ingest` | `{name, model, tokenizer?, paths?: [server paths], upload?: id, seq_len?, force?}`; job |
//! | `GET /api/datasets` | the `dataset.info` events of `datasets list` |
//! | `GET /api/datasets/{name}` | `{info: dataset.info of datasets show, manifest: its manifest.json}` |
//! | `GET /api/models` | the `model.stored` events of `models list` |
//! | `GET /api/models/{name}` | `{stored: model.stored, info: model.info of inspect}` |
//! | `POST /api/models/import` | `{path, name?, tokenizer?}`; job |
//! | `POST /api/models/pull` | `{repo, revision?}`; job (emits `download.progress`) |
//! | `POST /api/generate` | `{model, tokenizer?, run?: run id (its adapter), prompt, chat?, max_tokens?, temperature?, top_p?, seed?}`; job (emits `generate.token`, then `generate.done`) |
//! | `GET /api/audit?since=&until=&command=&result=` | `audit.entry` entries, newest first |
//! | `POST /api/audit/verify` | the `audit.verify` event's fields |
//! | `GET /api/audit/export?format=json\|csv` | the `audit export` document as a download |
//!
//! A job answer is `{job: id}`. A job summary: `{id, kind, args, status: "running" | "ok" |
//! "failed", exit_code, error, hint, started, ended}`.
//!
//! A run summary: `{id, dir, status: "running" | "finished" | "interrupted" | "failed",
//! method, model, steps, step, loss, loss_ema, val_loss, lr, tokens_per_s, started, ended,
//! error, hint, output}` (fields unknown yet are null). A run is running while its process
//! holds the lock on `train.lock`; one that stopped without `train.done` failed, with the
//! last `error` event, else the last `error:` line of its `studio.log`, as its error.

pub mod assets;
