//! An Ollama `Modelfile` TEMPLATE derived from a model's Jinja chat template.
//!
//! Ollama formats chats with Go templates, not Jinja, so the template the model was trained
//! with has to be translated. Rather than parse Jinja, we render it with sentinel message
//! contents and cut the output around the sentinels: what precedes a user message is the
//! user prefix, what follows it before the assistant's text is the user suffix plus the
//! assistant prefix, and so on. Conversations of several shapes pin down each piece; a
//! default system message (one the template inserts when there is none) becomes the
//! Modelfile's SYSTEM. The pieces are then checked by rendering test conversations both
//! ways: a template whose output is not "one fixed prefix and suffix per role" (Llama 2's
//! system message folded into the first user turn, say) is refused rather than translated
//! wrongly.

use crate::chat::{ChatMessage, render_chat};
use crate::error::{Result, TokenizerError};

const SYS: &str = "NFSENTINELSYSTEMq7";
const USER: &str = "NFSENTINELUSERq7";
const USER2: &str = "NFSENTINELUSERTWOq7";
const ASSISTANT: &str = "NFSENTINELASSISTANTq7";

/// What a Modelfile needs besides `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OllamaChat {
    /// The Go template (`TEMPLATE """..."""`).
    pub template: String,
    /// The default system message the Jinja template inserts, if any (`SYSTEM`).
    pub system: Option<String>,
    /// Texts that end the assistant's turn (`PARAMETER stop`).
    pub stops: Vec<String>,
}

/// Per-role prefix and suffix around a message's content.
#[derive(Debug, Clone, Default)]
struct Pieces {
    sys: (String, String),
    user: (String, String),
    assistant: (String, String),
    /// Text rendered before the first message when there is no system message, other
    /// than a default system turn (e.g. a BOS the template writes).
    lead: String,
    default_system: Option<String>,
}

fn refuse(reason: impl Into<String>) -> TokenizerError {
    TokenizerError::NotExportable {
        target: "an Ollama Modelfile template",
        reason: reason.into(),
    }
}

/// `s` split around `mark`: (before, after); the mark must occur exactly once.
fn around<'a>(s: &'a str, mark: &str) -> Result<(&'a str, &'a str)> {
    let i = s
        .find(mark)
        .ok_or_else(|| refuse("the template drops message contents"))?;
    if s[i + mark.len()..].contains(mark) {
        return Err(refuse("the template repeats a message's contents"));
    }
    Ok((&s[..i], &s[i + mark.len()..]))
}

fn m(role: &str, content: &str) -> ChatMessage {
    ChatMessage::new(role, content)
}

/// Derives the Modelfile template from `template` (Jinja); `bos` / `eos` are the
/// tokenizer's token texts, `add_bos` whether it puts BOS before a prompt itself (then a
/// BOS the template writes at the start is left out, or llama.cpp would see two), and
/// `stop_tokens` the texts of its end-of-generation tokens.
pub fn ollama_chat(
    template: &str,
    bos: &str,
    eos: &str,
    add_bos: bool,
    stop_tokens: &[String],
) -> Result<OllamaChat> {
    // Only a BOS the tokenizer adds anyway is dropped: SmolLM2's BOS is `<|im_start|>`,
    // which its template writes as the opening of every turn.
    let bos = if add_bos { bos } else { "" };
    let render =
        |msgs: &[ChatMessage], gen_prompt: bool| render_chat(template, msgs, gen_prompt, bos, eos);
    // [user] without and with the generation prompt: the user suffix and the assistant
    // opening.
    let x = render(&[m("user", USER)], false)?;
    let xg = render(&[m("user", USER)], true)?;
    let generation = xg
        .strip_prefix(x.as_str())
        .ok_or_else(|| refuse("the generation prompt changes earlier text"))?
        .to_string();
    let (x_head, user_suf) = around(&x, USER)?;
    // [user, assistant, user]: the assistant's pieces and a later user's prefix.
    let z = render(
        &[m("user", USER), m("assistant", ASSISTANT), m("user", USER2)],
        false,
    )?;
    let (_, after_user) = around(&z, USER)?;
    let (between, after_asst) = around(after_user, ASSISTANT)?;
    let asst_pre = between
        .strip_prefix(user_suf)
        .ok_or_else(|| refuse("the user turn ends differently before an assistant turn"))?;
    let (asst_suf_user_pre, tail) = around(after_asst, USER2)?;
    if tail != user_suf {
        return Err(refuse("user turns end differently"));
    }
    // The assistant suffix is what a conversation ending in an assistant turn ends with.
    let y = render(&[m("user", USER), m("assistant", ASSISTANT)], false)?;
    let (_, asst_suf) = around(&y, ASSISTANT)?;
    let user_pre = asst_suf_user_pre
        .strip_prefix(asst_suf)
        .ok_or_else(|| refuse("the assistant turn ends differently before a user turn"))?;
    let lead_all = x_head
        .strip_suffix(user_pre)
        .ok_or_else(|| refuse("the first user turn opens differently from later ones"))?;
    // [system, user]: the system pieces.
    let w = render(&[m("system", SYS), m("user", USER)], false)?;
    let (w_head, w_rest) = around(&w, SYS)?;
    let (sys_suf_user_pre, _) = around(w_rest, USER)?;
    let sys_suf = sys_suf_user_pre.strip_suffix(user_pre).ok_or_else(|| {
        refuse("the system message is not a turn of its own (it is folded into the user turn)")
    })?;
    // A BOS the template writes itself is left to the tokenizer, as Ollama (llama.cpp)
    // adds it when the model asks for one.
    let strip_bos = |s: &str| -> String {
        match s.strip_prefix(bos) {
            Some(rest) if !bos.is_empty() => rest.to_string(),
            _ => s.to_string(),
        }
    };
    let sys_pre = strip_bos(w_head);
    let lead = strip_bos(lead_all);
    // Without a system message the template may insert its own: that is `sys_pre + D +
    // sys_suf` before the first user turn.
    let default_system = if lead.is_empty() {
        None
    } else {
        let d = lead
            .strip_prefix(sys_pre.as_str())
            .and_then(|r| r.strip_suffix(sys_suf))
            .filter(|_| !sys_pre.is_empty() || !sys_suf.is_empty())
            .ok_or_else(|| {
                refuse(
                    "the template writes text before the first turn that is not a system message",
                )
            })?;
        Some(d.to_string())
    };
    let pieces = Pieces {
        sys: (sys_pre, sys_suf.into()),
        user: (user_pre.into(), user_suf.into()),
        assistant: (asst_pre.into(), asst_suf.into()),
        lead: String::new(),
        default_system,
    };
    if generation != pieces.assistant.0 {
        return Err(refuse(
            "the generation prompt differs from the assistant turn's opening",
        ));
    }
    check(template, bos, eos, &pieces)?;
    let stops = stop_tokens
        .iter()
        .filter(|t| !t.is_empty() && (pieces.assistant.1.contains(t.as_str()) || *t == eos))
        .cloned()
        .collect();
    Ok(OllamaChat {
        template: go_template(&pieces),
        system: pieces.default_system.clone(),
        stops,
    })
}

/// What the Go template renders for `msgs` (the default system message already inserted
/// by Ollama when there is none), mirrored in Rust to check the pieces.
fn simulate(p: &Pieces, msgs: &[ChatMessage], gen_prompt: bool) -> String {
    let mut out = p.lead.clone();
    for (i, msg) in msgs.iter().enumerate() {
        let last = i + 1 == msgs.len();
        let (pre, suf) = match msg.role.as_str() {
            "system" => &p.sys,
            "user" => &p.user,
            _ => &p.assistant,
        };
        out.push_str(pre);
        out.push_str(&msg.content);
        // Ollama continues an assistant message that ends the conversation, so its suffix
        // is left off only when the model is asked to generate.
        if !(last && gen_prompt && msg.role == "assistant") {
            out.push_str(suf);
        }
    }
    if gen_prompt && msgs.last().is_some_and(|m| m.role != "assistant") {
        out.push_str(&p.assistant.0);
    }
    out
}

/// Renders test conversations with the Jinja template and with the pieces; any
/// difference means the template cannot be expressed.
fn check(template: &str, bos: &str, eos: &str, p: &Pieces) -> Result<()> {
    let with_default = |msgs: Vec<ChatMessage>| -> Vec<ChatMessage> {
        match (&p.default_system, msgs.first()) {
            (Some(d), Some(f)) if f.role != "system" => {
                let mut v = vec![m("system", d)];
                v.extend(msgs);
                v
            }
            _ => msgs,
        }
    };
    let cases: Vec<Vec<ChatMessage>> = vec![
        vec![m("user", "Hi there")],
        vec![m("system", "Be brief."), m("user", "What is 2+2?")],
        vec![
            m("system", "S"),
            m("user", "a"),
            m("assistant", "b"),
            m("user", "c"),
        ],
        vec![m("user", "a"), m("assistant", "b")],
    ];
    for msgs in cases {
        for gen_prompt in [false, true] {
            if gen_prompt && msgs.last().is_some_and(|m| m.role == "assistant") {
                continue;
            }
            let jinja = render_chat(template, &msgs, gen_prompt, bos, eos)?;
            let jinja = match jinja.strip_prefix(bos) {
                Some(rest) if !bos.is_empty() => rest,
                _ => &jinja,
            };
            let ours = simulate(p, &with_default(msgs.clone()), gen_prompt);
            if jinja != ours {
                return Err(refuse(format!(
                    "rendering {} messages differs: {jinja:?} vs {ours:?}",
                    msgs.len()
                )));
            }
        }
    }
    Ok(())
}

/// Go-template string literal contents: the pieces are inserted as literal text, so only
/// the template delimiters need care.
fn lit(s: &str) -> String {
    if s.contains("{{") || s.contains("}}") {
        // `{{ "..." }}` prints a Go string literal; JSON escaping is valid Go syntax.
        format!(
            "{{{{ {} }}}}",
            serde_json::to_string(s).expect("string serializes")
        )
    } else {
        s.to_string()
    }
}

/// The Ollama template: one branch per role over `.Messages`, the assistant opening
/// after the last non-assistant message. No `{{-` trimming anywhere: it would eat the
/// newlines that end the literal pieces before it, and the template has no whitespace
/// of its own to trim.
fn go_template(p: &Pieces) -> String {
    let mut t = String::new();
    t.push_str(&lit(&p.lead));
    t.push_str("{{ range $i, $_ := .Messages }}");
    t.push_str("{{ $last := eq (len (slice $.Messages $i)) 1 }}");
    t.push_str(&format!(
        "{{{{ if eq .Role \"system\" }}}}{}{{{{ .Content }}}}{}",
        lit(&p.sys.0),
        lit(&p.sys.1)
    ));
    t.push_str(&format!(
        "{{{{ else if eq .Role \"user\" }}}}{}{{{{ .Content }}}}{}",
        lit(&p.user.0),
        lit(&p.user.1)
    ));
    t.push_str(&format!(
        "{{{{ else if eq .Role \"assistant\" }}}}{}{{{{ .Content }}}}{{{{ if not $last }}}}{}{{{{ end }}}}",
        lit(&p.assistant.0),
        lit(&p.assistant.1)
    ));
    t.push_str("{{ end }}");
    t.push_str(&format!(
        "{{{{ if and $last (ne .Role \"assistant\") }}}}{}{{{{ end }}}}",
        lit(&p.assistant.0)
    ));
    t.push_str("{{ end }}");
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::builtin_template;

    #[test]
    fn chatml_becomes_role_branches_with_im_end_stop() {
        let t = builtin_template("chatml").unwrap();
        let o = ollama_chat(
            t,
            "<|im_start|>",
            "<|im_end|>",
            false,
            &["<|im_end|>".into()],
        )
        .unwrap();
        assert!(
            o.template
                .contains("if eq .Role \"user\" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n"),
            "{}",
            o.template
        );
        assert!(
            !o.template.contains("{{-"),
            "trimming would eat the pieces' newlines"
        );
        assert_eq!(o.system, None);
        assert_eq!(o.stops, vec!["<|im_end|>".to_string()]);
    }

    #[test]
    fn default_system_message_becomes_system() {
        let t = "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
        let o = ollama_chat(
            t,
            "<|im_start|>",
            "<|im_end|>",
            false,
            &["<|im_end|>".into()],
        )
        .unwrap();
        assert_eq!(o.system.as_deref(), Some("You are helpful."));
        assert!(
            o.template
                .contains("if eq .Role \"system\" }}<|im_start|>system\n{{ .Content }}"),
            "a BOS that opens every turn is kept: {}",
            o.template
        );
    }

    #[test]
    fn llama3_bos_is_left_to_the_tokenizer() {
        let t = builtin_template("llama3").unwrap();
        let o = ollama_chat(
            t,
            "<|begin_of_text|>",
            "<|eot_id|>",
            true,
            &["<|eot_id|>".into(), "<|end_of_text|>".into()],
        )
        .unwrap();
        assert!(!o.template.contains("<|begin_of_text|>"), "{}", o.template);
        assert_eq!(o.stops, vec!["<|eot_id|>".to_string()]);
    }

    #[test]
    fn llama2_system_folded_into_user_turn_is_refused() {
        let t = builtin_template("llama2").unwrap();
        let err = ollama_chat(t, "<s>", "</s>", true, &["</s>".into()]).unwrap_err();
        assert!(matches!(err, TokenizerError::NotExportable { .. }), "{err}");
    }
}
