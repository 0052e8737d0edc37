//! `neuralforge chat`: an interactive conversation in the terminal.
//!
//! Each turn re-renders the whole conversation with the model's chat template (templates
//! are not always prefix-stable, so rendering only the new turn could differ from what the
//! model was trained on) and then reuses the KV cache for the longest common prefix of
//! tokens, so only the new part is processed.

use nf_protocol::ErrorCode;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::Result;
use nf_model::Sampler;
use nf_model::generate::generate;
use nf_tokenizer::ChatMessage;

use crate::cli::ChatArgs;
use crate::errors::user_error;
use crate::flags::{announce, chat_template, sampler_config};
use crate::output::Output;
use nf_store::resolve::load;
use nf_tokenizer::{TextStream, encode_chat};

/// Audited: a `start` entry with the model's files, a `turn` entry per message (its
/// sha256; the text only with `--audit-prompts`), and an `end` entry with the turn count.
pub fn run(args: &ChatArgs, home: &Path, out: &mut Output) -> Result<()> {
    crate::audit::scoped(home, "chat", |rec| run_inner(args, home, out, rec))
}

fn run_inner(
    args: &ChatArgs,
    home: &Path,
    out: &mut Output,
    rec: &mut nf_audit::Record,
) -> Result<()> {
    let loaded = load(&args.model.spec(), home)?;
    rec.inputs = crate::audit::model_inputs(home, &args.model, &loaded.model.path)?;
    if let Some(s) = &args.system {
        rec.inputs.push(crate::audit::prompt_input("system", s));
    }
    crate::audit::append(home, rec.clone().event("start"))?;
    rec.event = Some("end".into());
    let mut turns = 0u64;
    announce(&loaded, out)?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let template = chat_template(tok, args.chat_template.as_deref())?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "Chatting with {} ({}). /reset starts over, /exit or Ctrl-D quits.",
            model.path.display(),
            model.config.arch
        );
    }
    let system: Vec<ChatMessage> = args
        .system
        .iter()
        .map(|s| ChatMessage {
            role: "system".into(),
            content: s.clone(),
        })
        .collect();
    let mut messages = system.clone();
    let mut cache = model.new_cache(model.config.max_seq_len);
    let mut cached: Vec<u32> = Vec::new(); // the tokens whose keys/values the cache holds
    let mut sampler = Sampler::new(sampler_config(&args.sampling));
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("\n> ");
            std::io::stderr().flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = system.clone();
                continue;
            }
            _ => {}
        }
        turns += 1;
        let mut turn = crate::audit::record("chat")
            .event("turn")
            .input(crate::audit::prompt_input("message", &line))
            .details(serde_json::json!({"turn": turns}));
        if args.audit_prompts {
            turn = turn.details(serde_json::json!({"turn": turns, "message": line}));
        }
        crate::audit::append(home, turn)?;
        rec.details = Some(serde_json::json!({"turns": turns}));
        messages.push(ChatMessage {
            role: "user".into(),
            content: line,
        });
        let mut ids = encode_chat(tok, &template, &messages)?;
        // Drop the oldest turns (keeping the system message) until the prompt leaves room
        // for a reply.
        let budget = model
            .config
            .max_seq_len
            .saturating_sub(args.sampling.max_tokens.min(model.config.max_seq_len / 2));
        while ids.len() > budget && messages.len() > system.len() + 1 {
            messages.remove(system.len());
            ids = encode_chat(tok, &template, &messages)?;
        }
        if ids.len() > budget {
            return Err(user_error(
                ErrorCode::ContextFull,
                "the message does not fit in the model's context",
                "send a shorter message",
            ));
        }
        let common = cached
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len() - 1);
        cache.truncate(common);
        cached.truncate(common);
        let mut stream = TextStream::new(tok, &ids);
        let mut reply = String::new();
        let max = args.sampling.max_tokens.min(cache.capacity - ids.len());
        let g = generate(
            model,
            &mut cache,
            &ids[common..],
            &mut sampler,
            max,
            tok.eos_ids(),
            |id| {
                let delta = stream.push(id);
                reply.push_str(&delta);
                out.text(&delta).is_ok()
            },
        )?;
        let rest = stream.finish();
        reply.push_str(&rest);
        out.text(&rest)?;
        out.text("\n")?;
        out.event(|| nf_protocol::Event::GenerateDone {
            text: reply.clone(),
            prompt_tokens: ids.len() as u64,
            generated_tokens: g.tokens.len() as u64,
            stop: g.stop.name().into(),
            prompt_ms: g.prompt_ms,
            decode_ms: g.decode_ms,
            prompt_tokens_per_s: if g.prompt_ms > 0.0 {
                (ids.len() - common) as f64 / g.prompt_ms * 1e3
            } else {
                0.0
            },
            decode_tokens_per_s: if g.decode_ms > 0.0 {
                g.tokens.len() as f64 / g.decode_ms * 1e3
            } else {
                0.0
            },
        })?;
        // The cache now holds the prompt and every generated token except the last (which
        // was sampled but never fed back).
        cached = ids;
        cached.extend(&g.tokens);
        cached.truncate(cache.len);
        messages.push(ChatMessage {
            role: "assistant".into(),
            content: reply.trim().to_string(),
        });
    }
    Ok(())
}
