//! Chat templates written inline (Llama 3, Llama 3.1, ChatML) rendered and encoded with
//! real tokenizers.

use nf_formats::GgufFile;
use nf_tokenizer::{ChatMessage, Tokenizer, TokenizerError, builtin_template, render_chat};

/// Meta-Llama-3-8B-Instruct's template.
const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/// The core of Llama 3.1's template: whitespace control, `is defined`, `strftime_now`,
/// list slicing and `raise_exception`.
const LLAMA31: &str = r#"{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if message.role not in ['user', 'assistant'] %}
        {{- raise_exception('Conversation roles must be user or assistant') }}
    {%- endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'].strip() + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

/// ChatML as Qwen and SmolLM use it, without a default system turn.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "You are helpful. "),
        ChatMessage::new("user", "Hi"),
    ]
}

#[test]
fn llama3_template_renders_and_encodes() {
    let assets = nf_testkit::require_assets!();
    let tok = Tokenizer::from_hf_file(assets.join("hf-tokenizers/llama3-tokenizer.json")).unwrap();
    let bos = tok.id_to_token(tok.bos_id().unwrap()).unwrap();
    let eos = tok.id_to_token(tok.eos_id().unwrap()).unwrap();
    assert_eq!((bos, eos), ("<|begin_of_text|>", "<|end_of_text|>"));
    let text = render_chat(LLAMA3, &conversation(), true, bos, eos).unwrap();
    assert_eq!(
        text,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    // The template writes BOS itself, so no BOS is added on top.
    let ids = tok.encode(&text, false, true).unwrap();
    let you_are_helpful = tok.encode("You are helpful.", false, false).unwrap();
    let mut expected = vec![128000, 128006, 9125, 128007, 271];
    expected.extend(&you_are_helpful);
    expected.extend([
        128009, 128006, 882, 128007, 271, 13347, 128009, 128006, 78191, 128007, 271,
    ]);
    assert_eq!(ids, expected);
    // Decoding skips the control tokens and keeps the text between them.
    assert_eq!(
        tok.decode(&ids),
        "system\n\nYou are helpful.user\n\nHiassistant\n\n"
    );

    let without_prompt = render_chat(LLAMA3, &conversation(), false, bos, eos).unwrap();
    assert!(without_prompt.ends_with("Hi<|eot_id|>"));
}

#[test]
fn llama31_template_uses_date_and_rejects_bad_roles() {
    let text = render_chat(LLAMA31, &conversation(), true, "<|begin_of_text|>", "").unwrap();
    let date_line = text
        .lines()
        .find_map(|l| l.strip_prefix("Today Date: "))
        .expect("date line");
    // "%d %b %Y", e.g. "05 Mar 2026".
    let parts: Vec<&str> = date_line.split(' ').collect();
    assert_eq!(parts.len(), 3, "{date_line}");
    assert!(
        parts[0].len() == 2 && parts[1].len() == 3 && parts[2].len() == 4,
        "{date_line}"
    );
    assert!(text.starts_with(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nToday Date: "
    ));
    assert!(text.contains(
        "\n\nYou are helpful.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    ));
    assert!(text.ends_with("<|start_header_id|>assistant<|end_header_id|>\n\n"));

    let bad = [ChatMessage::new("tool", "x")];
    match render_chat(LLAMA31, &bad, true, "", "") {
        Err(TokenizerError::Template(e)) => {
            assert!(
                e.to_string()
                    .contains("Conversation roles must be user or assistant"),
                "{e}"
            )
        }
        other => panic!("expected a template error, got {other:?}"),
    }
}

/// ChatML with SmolLM2's tokenizer gives exactly the golden prompt ids, and with Qwen2's
/// vocabulary the markers become Qwen's ids.
#[test]
fn chatml_template_encodes_to_golden_ids() {
    let assets = nf_testkit::require_assets!();
    let user = [ChatMessage::new("user", "What is the capital of France?")];
    let text = render_chat(CHATML, &user, true, "", "").unwrap();
    assert_eq!(
        text,
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );

    let smol = GgufFile::open(assets.join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let smol = Tokenizer::from_gguf(&smol).unwrap();
    assert_eq!(
        smol.encode(&text, smol.add_bos_default(), true).unwrap(),
        [
            1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198
        ]
    );

    let qwen = GgufFile::open(assets.join("llamacpp-vocab/ggml-vocab-qwen2.gguf")).unwrap();
    let qwen = Tokenizer::from_gguf(&qwen).unwrap();
    let ids = qwen.encode(&text, false, true).unwrap();
    assert_eq!(ids[0], 151644);
    assert_eq!(ids.iter().filter(|&&i| i == 151644).count(), 2);
    assert_eq!(ids.iter().filter(|&&i| i == 151645).count(), 1);
    assert_eq!(
        qwen.decode(&ids),
        "user\nWhat is the capital of France?\nassistant\n"
    );
    // The GGUF's own template adds Qwen's default system turn.
    let own = render_chat(qwen.chat_template().unwrap(), &user, true, "", "").unwrap();
    assert_eq!(
        own,
        format!("<|im_start|>system\nYou are a helpful assistant<|im_end|>\n{text}")
    );
}

/// Block tags on their own lines vanish with their indentation and newline, as HF's
/// `trim_blocks=True, lstrip_blocks=True` does, and a final newline is dropped as Jinja2
/// does by default.
#[test]
fn whitespace_control_matches_hf() {
    let template = "{% for m in messages %}\n    {% if m.role == 'user' %}\nU: {{ m.content }}\n    {% else %}\nA: {{ m.content }}\n    {% endif %}\n{% endfor %}\n";
    let msgs = [
        ChatMessage::new("user", "hi"),
        ChatMessage::new("assistant", "yo"),
    ];
    assert_eq!(
        render_chat(template, &msgs, false, "", "").unwrap(),
        "U: hi\nA: yo\n"
    );
    // Python string methods through pycompat (booleans print as Python's `True`).
    let t = "{{ messages[0].content.upper() }}|{{ messages[0].content.startswith('h') }}|{% for k, v in messages[0].items() %}{{ k }}={{ v }};{% endfor %}";
    assert_eq!(
        render_chat(t, &msgs, false, "", "").unwrap(),
        "HI|True|role=user;content=hi;"
    );
    // A syntax error is a typed error, not a panic.
    assert!(matches!(
        render_chat("{% for %}", &msgs, false, "", ""),
        Err(TokenizerError::Template(_))
    ));
}

/// The built-in templates render as the inline ones above, and Llama 2's `[INST]` format
/// encodes with the Llama 2 vocabulary's BOS/EOS ids.
#[test]
fn builtin_templates() {
    let conv = conversation();
    for (name, inline) in [("chatml", CHATML), ("llama3", LLAMA3)] {
        let builtin = builtin_template(name).unwrap();
        for gen_prompt in [false, true] {
            assert_eq!(
                render_chat(builtin, &conv, gen_prompt, "<|begin_of_text|>", "").unwrap(),
                render_chat(inline, &conv, gen_prompt, "<|begin_of_text|>", "").unwrap(),
                "{name}"
            );
        }
    }
    assert!(builtin_template("no-such-template").is_none());

    let llama2 = builtin_template("llama2").unwrap();
    let msgs = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "Hello! "),
        ChatMessage::new("user", "Bye"),
    ];
    let text = render_chat(llama2, &msgs, true, "<s>", "</s>").unwrap();
    assert_eq!(
        text,
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST]"
    );
    let wrong_order = [ChatMessage::new("assistant", "x")];
    assert!(render_chat(llama2, &wrong_order, true, "<s>", "</s>").is_err());

    let assets = nf_testkit::require_assets!();
    let tok = Tokenizer::from_llama2c(assets.join("llama2c/tokenizer.bin"), None).unwrap();
    let ids = tok.encode(&text, false, true).unwrap();
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 2);
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 1);
    assert_eq!(ids[0], 1);
    // As plain text the markers are not BOS/EOS.
    let plain = tok.encode(&text, false, false).unwrap();
    assert!(!plain.contains(&1) && !plain.contains(&2));
}
