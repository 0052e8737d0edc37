//! `neuralforge generate`: one prompt in, its continuation out.

use nf_protocol::ErrorCode;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use nf_model::Sampler;
use nf_model::generate::{Generation, generate};
use nf_protocol::Event;
use nf_tokenizer::{ChatMessage, TextStream, encode_chat};

use crate::cli::{GenerateArgs, SamplingArgs};
use crate::errors::user_error;
use crate::flags::{announce, chat_template, sampler_config};
use crate::output::Output;
use nf_store::resolve::{Loaded, load};

/// What to continue: a plain prompt, or a conversation rendered with the chat template.
enum Input {
    Text(String),
    Chat(Vec<ChatMessage>),
}

impl Input {
    /// `--prompt` (or stdin for `-`), `--chat` with `--system`, or `--messages`.
    fn read(args: &GenerateArgs) -> Result<Input> {
        if let Some(path) = &args.messages {
            let text = read_text(path)?;
            let messages = nf_tokenizer::chat::parse_conversation(&text).map_err(|e| {
                let hint = nf_protocol::Describe::hint(&e).unwrap_or_default();
                user_error(
                    ErrorCode::BadInput,
                    format!("{}: {e}", path.display()),
                    hint,
                )
            })?;
            return Ok(Input::Chat(messages));
        }
        let prompt = match args.prompt.as_deref() {
            Some("-") => read_text(Path::new("-"))?,
            Some(p) => p.to_string(),
            None => String::new(),
        };
        if !args.chat {
            return Ok(Input::Text(prompt));
        }
        let system = args.system.iter().map(|s| ChatMessage {
            role: "system".into(),
            content: s.clone(),
        });
        let user = ChatMessage {
            role: "user".into(),
            content: prompt,
        };
        Ok(Input::Chat(system.chain(std::iter::once(user)).collect()))
    }

    /// The audit record's inputs: each text by its sha256 only.
    fn audit_inputs(&self) -> Vec<nf_audit::Artifact> {
        match self {
            Input::Text(p) => vec![crate::audit::prompt_input("prompt", p)],
            Input::Chat(messages) => messages
                .iter()
                .map(|m| {
                    let kind = if m.role == "user" {
                        "prompt"
                    } else {
                        m.role.as_str()
                    };
                    crate::audit::prompt_input(kind, &m.content)
                })
                .collect(),
        }
    }
}

/// A file's text, or stdin's for `-`.
fn read_text(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    read.map_err(|e| {
        user_error(
            ErrorCode::Io,
            format!("{}: {e}", path.display()),
            "check the path (and that it is UTF-8 text)",
        )
    })?;
    Ok(text)
}

/// Audited: the model's files, the prompt's sha256 (the prompt itself only with
/// `--audit-prompts`) and the generated text's sha256.
pub fn run(args: &GenerateArgs, home: &Path, out: &mut Output) -> Result<()> {
    crate::audit::scoped(home, "generate", |rec| {
        let input = Input::read(args)?;
        let loaded = load(&args.model.spec(), home)?;
        rec.inputs = crate::audit::model_inputs(home, &args.model, &loaded.model.path)?;
        rec.inputs.extend(input.audit_inputs());
        if args.audit_prompts {
            rec.details = Some(match &input {
                Input::Text(p) => serde_json::json!({"prompt": p}),
                Input::Chat(m) => serde_json::json!({"messages": m}),
            });
        }
        let (g, text) = run_loaded(args, &input, &loaded, out)?;
        rec.outputs
            .push(nf_audit::Artifact::text_hash("generation", &text));
        let d = rec.details.get_or_insert_with(|| serde_json::json!({}));
        d["generated_tokens"] = g.tokens.len().into();
        d["stop"] = g.stop.name().into();
        if args.audit_prompts {
            d["generation"] = text.clone().into();
        }
        Ok(())
    })
}

fn run_loaded(
    args: &GenerateArgs,
    input: &Input,
    loaded: &Loaded,
    out: &mut Output,
) -> Result<(Generation, String)> {
    announce(loaded, out)?;
    let prompt_ids = match input {
        Input::Chat(messages) => {
            let template = chat_template(&loaded.tokenizer, args.chat_template.as_deref())?;
            encode_chat(&loaded.tokenizer, &template, messages)?
        }
        Input::Text(prompt) => {
            loaded
                .tokenizer
                .encode(prompt, loaded.tokenizer.add_bos_default(), true)?
        }
    };
    if let Some(path) = &args.logits {
        write_logits(loaded, &prompt_ids, path)?;
    }
    let g = run_generation(loaded, &prompt_ids, &args.sampling, out)?;
    finish(&g, out)?;
    Ok(g)
}

/// `--logits FILE`: the logits of every prompt position as raw f32, and the ids beside them.
fn write_logits(l: &Loaded, ids: &[u32], path: &Path) -> Result<()> {
    use std::io::Write;
    let mut cache = l.model.new_cache(ids.len());
    let logits = l.model.forward(&mut cache, ids, true)?;
    nf_formats::atomic::write_atomic(path, |w| {
        logits
            .iter()
            .try_for_each(|x| w.write_all(&x.to_le_bytes()))
    })?;
    let text: String = ids.iter().map(|i| format!("{i}\n")).collect();
    let mut ids_path = path.as_os_str().to_owned();
    ids_path.push(".ids");
    nf_formats::atomic::write_atomic(Path::new(&ids_path), |w| w.write_all(text.as_bytes()))?;
    Ok(())
}

/// Samples a continuation of `prompt_ids`, streaming text (or `generate.token` events).
pub fn run_generation(
    l: &Loaded,
    prompt_ids: &[u32],
    s: &SamplingArgs,
    out: &mut Output,
) -> Result<(Generation, String)> {
    let ctx = l.model.config.max_seq_len;
    if prompt_ids.len() >= ctx {
        return Err(user_error(
            ErrorCode::ContextFull,
            format!(
                "the prompt is {} tokens; the model's context holds {ctx}",
                prompt_ids.len()
            ),
            "shorten the prompt",
        ));
    }
    // SIGTERM (the studio's Stop) ends generation after the current token, as a normal
    // end with the stop reason `cancelled`, so the text so far and the audit entry stay.
    let cancel = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&cancel))?;
    let mut cache = l.model.new_cache(prompt_ids.len() + s.max_tokens);
    let mut sampler = Sampler::new(sampler_config(s));
    let mut stream = TextStream::new(&l.tokenizer, prompt_ids);
    let mut text = String::new();
    let mut io_error = None;
    let mut index = 0u64;
    let g = generate(
        &l.model,
        &mut cache,
        prompt_ids,
        &mut sampler,
        s.max_tokens,
        l.tokenizer.eos_ids(),
        |id| {
            let delta = stream.push(id);
            text.push_str(&delta);
            let r = out.text(&delta).and_then(|_| {
                out.event(|| Event::GenerateToken {
                    index,
                    id,
                    text: delta,
                })
            });
            index += 1;
            // A closed stdout (`| head`) ends generation quietly.
            match r {
                Ok(()) => !cancel.load(Ordering::SeqCst),
                Err(e) => {
                    io_error = Some(e);
                    false
                }
            }
        },
    )?;
    if let Some(e) = io_error {
        return Err(e.into());
    }
    let rest = stream.finish();
    out.text(&rest)?;
    text.push_str(&rest);
    Ok((g, text))
}

/// Ends the output: a newline after human text plus a stats line on stderr, or
/// `generate.done`.
pub fn finish((g, text): &(Generation, String), out: &mut Output) -> Result<()> {
    let per_s = |n: usize, ms: f64| if ms > 0.0 { n as f64 / ms * 1e3 } else { 0.0 };
    let (pp, tg) = (
        per_s(g.prompt_tokens, g.prompt_ms),
        per_s(g.tokens.len(), g.decode_ms),
    );
    out.text("\n")?;
    if !out.is_json() {
        eprintln!(
            "[{} prompt tokens at {pp:.1} tok/s, {} generated at {tg:.1} tok/s, stop: {}]",
            g.prompt_tokens,
            g.tokens.len(),
            g.stop.name()
        );
    }
    out.event(|| Event::GenerateDone {
        text: text.clone(),
        prompt_tokens: g.prompt_tokens as u64,
        generated_tokens: g.tokens.len() as u64,
        stop: g.stop.name().into(),
        prompt_ms: g.prompt_ms,
        decode_ms: g.decode_ms,
        prompt_tokens_per_s: pp,
        decode_tokens_per_s: tg,
    })?;
    Ok(())
}
