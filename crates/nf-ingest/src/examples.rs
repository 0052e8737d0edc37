//! Token ids and loss masks for training text: text windows, and chat and completion
//! examples rendered with the model's chat template.
//!
//! A mask holds one flag per id: 1 where the id is a training target, 0 where it is only
//! context. Text windows are all targets except their leading separator. In a chat, the
//! assistant turns are targets, each with what the template writes after it (the
//! end-of-turn token, so the model learns to stop); the system and user turns, the
//! template's role headers and the generation prompt are context.
//!
//! The assistant spans are found by rendering prefixes of the conversation: for the i-th
//! message (an assistant turn), `render(messages[..i], add_generation_prompt)` ends where
//! the answer begins and `render(messages[..=i])` where it ends, both prefixes of the full
//! rendering for the templates models ship. Each span is tokenized on its own, so the ids
//! split exactly at the span boundaries; at those boundaries sit special tokens in every
//! common template, where tokenizers split anyway.

use nf_data::document_separator;
use nf_tokenizer::{ChatMessage, Result, Tokenizer, render_chat};

use super::Example;

/// Ids with their loss mask (same length).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids.
    pub ids: Vec<u32>,
    /// 1 where the model learns the token, 0 where it only reads it.
    pub mask: Vec<u8>,
}

impl Encoded {
    fn push(&mut self, ids: &[u32], target: bool) {
        self.ids.extend_from_slice(ids);
        self.mask
            .extend(std::iter::repeat_n(u8::from(target), ids.len()));
    }
}

/// How examples are rendered: the tokenizer and, when the model has one, its chat template.
pub struct Renderer<'a> {
    /// The tokenizer.
    pub tok: &'a Tokenizer,
    /// The chat template, when the model has one.
    pub template: Option<&'a str>,
    bos: String,
    eos: String,
}

impl<'a> Renderer<'a> {
    /// A renderer with this tokenizer and template.
    pub fn new(tok: &'a Tokenizer, template: Option<&'a str>) -> Renderer<'a> {
        let (bos, eos) = tok.bos_eos_text();
        Renderer {
            tok,
            template,
            bos,
            eos,
        }
    }

    /// A text window: the document separator (not a target), then the text (targets).
    pub fn text(&self, text: &str) -> Result<Encoded> {
        let mut e = Encoded::default();
        e.push(document_separator(self.tok).as_slice(), false);
        e.push(&self.tok.encode(text, false, false)?, true);
        Ok(e)
    }

    /// An example with its mask, and a warning when the mask could not be derived (the
    /// example is then all targets).
    pub fn example(&self, ex: &Example) -> Result<(Encoded, Option<String>)> {
        match (ex, self.template) {
            (Example::Chat { messages }, Some(t)) => self.chat(t, messages),
            (Example::Completion { prompt, completion }, Some(t)) => self.chat(
                t,
                &[
                    ChatMessage::new("user", prompt.clone()),
                    ChatMessage::new("assistant", completion.clone()),
                ],
            ),
            (Example::Completion { prompt, completion }, None) => {
                // No template: the prompt and its completion as plain text, then EOS.
                let mut e = Encoded::default();
                e.push(document_separator(self.tok).as_slice(), false);
                e.push(&self.tok.encode(prompt, false, false)?, false);
                e.push(&self.tok.encode(completion, false, false)?, true);
                e.push(self.tok.eos_id().as_slice(), true);
                Ok((e, None))
            }
            (Example::Chat { .. }, None) => Err(nf_tokenizer::TokenizerError::Library {
                context: "chat example".into(),
                message: "the model has no chat template (pass one with --chat-template)".into(),
            }),
        }
    }

    fn render(&self, t: &str, messages: &[ChatMessage], generation: bool) -> Result<String> {
        render_chat(t, messages, generation, &self.bos, &self.eos)
    }

    fn chat(&self, t: &str, messages: &[ChatMessage]) -> Result<(Encoded, Option<String>)> {
        let full = self.render(t, messages, false)?;
        let mut spans = Vec::new();
        let mut warning = None;
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let start = self.render(t, &messages[..i], true)?;
            let end = self.render(t, &messages[..=i], false)?;
            let prev_end = spans.last().map_or(0, |&(_, e)| e);
            if full.starts_with(&start)
                && full.starts_with(&end)
                && start.len() >= prev_end
                && start.len() <= end.len()
            {
                spans.push((start.len(), end.len()));
            } else {
                warning = Some(
                    "the chat template does not render a conversation prefix by prefix, so \
                     its assistant turns cannot be told apart: trained on the whole example"
                        .to_string(),
                );
                spans = vec![(0, full.len())];
                break;
            }
        }
        let add_bos =
            self.tok.add_bos_default() && (self.bos.is_empty() || !full.starts_with(&self.bos));
        let mut e = Encoded::default();
        if add_bos {
            e.push(self.tok.bos_id().as_slice(), false);
        }
        let mut pos = 0;
        for (s, end) in spans {
            e.push(&self.tok.encode(&full[pos..s], false, true)?, false);
            e.push(&self.tok.encode(&full[s..end], false, true)?, true);
            pos = end;
        }
        e.push(&self.tok.encode(&full[pos..], false, true)?, false);
        Ok((e, warning))
    }
}
