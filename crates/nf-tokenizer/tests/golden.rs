//! Golden outputs of reference implementations (`shared/assets/golden`): llama2.c's
//! `run.c` with stories260K + tok512, and SmolLM2-135M-Instruct's chat prompt.

use nf_formats::GgufFile;
use nf_tokenizer::{ChatMessage, Tokenizer, render_chat};

/// The list after `key` in a golden file, e.g. `ids [1, 2, 3]`.
fn ids_after(text: &str, key: &str) -> Vec<u32> {
    let start = text
        .find(key)
        .unwrap_or_else(|| panic!("`{key}` in golden file"))
        + key.len();
    let open = start + text[start..].find('[').unwrap() + 1;
    let close = open + text[open..].find(']').unwrap();
    text[open..close]
        .split(',')
        .map(|t| t.trim().parse().unwrap())
        .collect()
}

/// tok512 (the 512-piece vocabulary of stories260K) encodes the prompt as run.c did, and
/// decoding run.c's generated ids reproduces its output byte for byte. run.c prints each
/// piece (dropping the space of the first piece after BOS, which `decode` does as the
/// SentencePiece dummy prefix) and then one `\n` of its own at the end.
#[test]
fn stories260k_tok512_matches_run_c() {
    let assets = nf_testkit::require_assets!();
    let tok = Tokenizer::from_llama2c(assets.join("llama2c/tok512.bin"), Some(512)).unwrap();
    assert_eq!(tok.vocab_size(), 512);
    assert_eq!(
        Tokenizer::from_llama2c(assets.join("llama2c/tok512.bin"), None)
            .unwrap()
            .vocab_size(),
        512
    );

    let golden =
        std::fs::read_to_string(assets.join("golden/stories260K_t0_n64_once_upon_a_time.ids"))
            .unwrap();
    let ids = ids_after(&golden, "ids");
    let prompt = tok.encode("Once upon a time", true, false).unwrap();
    assert_eq!(prompt[0], 1);
    assert!(prompt.len() > 2);
    assert_eq!(prompt, ids[..prompt.len()], "prompt ids");

    let expected =
        std::fs::read(assets.join("golden/stories260K_runc_t0_n64_once_upon_a_time.txt")).unwrap();
    let mut text = tok.decode(&ids[1..]).into_bytes();
    text.push(b'\n');
    assert_eq!(
        String::from_utf8_lossy(&text),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(text, expected);
    // Decoding with the BOS in front gives the same text: BOS is skipped.
    assert_eq!(tok.decode(&ids), tok.decode(&ids[1..]));
}

/// SmolLM2's GGUF: its own chat template renders one user turn, and encoding the result
/// with special tokens parsed gives the golden prompt ids (after the default system turn
/// the template inserts, see below); the golden answer ids decode to the golden text.
#[test]
fn smollm2_chat_prompt_matches_golden() {
    let assets = nf_testkit::require_assets!();
    let gguf = GgufFile::open(assets.join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    assert_eq!(tok.kind(), "gguf-gpt2:smollm");
    assert!(!tok.add_bos_default());
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert_eq!(tok.eos_ids(), [0, 2]); // <|endoftext|>, <|im_end|>

    let golden =
        std::fs::read_to_string(assets.join("golden/smollm2_q41_chat_capital_france.txt")).unwrap();
    let prompt_ids = ids_after(&golden, "prompt ids");
    let all_ids = ids_after(&golden, "\nids");
    assert_eq!(all_ids[..prompt_ids.len()], prompt_ids);

    let template = tok.chat_template().expect("chat template in GGUF");
    let bos = tok.id_to_token(tok.bos_id().unwrap()).unwrap();
    let eos = tok.id_to_token(tok.eos_id().unwrap()).unwrap();
    let messages = [ChatMessage::new("user", "What is the capital of France?")];
    let rendered = render_chat(template, &messages, true, bos, eos).unwrap();
    // The template adds a default system turn when the conversation has none; the golden
    // prompt was rendered without it (llama.cpp's built-in ChatML formatting), so it is
    // exactly the rest of the rendered text.
    let system = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";
    let user_turn =
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(rendered, format!("{system}{user_turn}"));

    let ids = tok.encode(&rendered, tok.add_bos_default(), true).unwrap();
    let system_ids = tok.encode(system, false, true).unwrap();
    assert_eq!(ids[..system_ids.len()], system_ids);
    assert_eq!(ids[system_ids.len()..], prompt_ids);
    assert_eq!(
        tok.encode(user_turn, tok.add_bos_default(), true).unwrap(),
        prompt_ids
    );

    // With a system message of its own, the template adds nothing and the ids are the
    // golden ids after that turn.
    let with_system = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "What is the capital of France?"),
    ];
    let rendered = render_chat(template, &with_system, true, bos, eos).unwrap();
    let ids = tok.encode(&rendered, false, true).unwrap();
    assert!(ids.ends_with(&prompt_ids));

    // Without parse_special the markers are plain text.
    let plain = tok.encode(user_turn, false, false).unwrap();
    assert!(!plain.contains(&1) && !plain.contains(&2));
    assert_eq!(tok.decode(&plain), user_turn);

    let answer = &all_ids[prompt_ids.len()..];
    assert_eq!(*answer.last().unwrap(), 2);
    assert_eq!(tok.decode(answer), "The capital of France is Paris.");
    let expected_answer = golden.lines().nth(1).unwrap();
    assert_eq!(expected_answer, "The capital of France is Paris.<|im_end|>");
    assert_eq!(tok.id_to_token(2), Some("<|im_end|>"));
    assert!(
        tok.token_bytes(2).is_empty(),
        "control tokens stream no bytes"
    );
}

/// Streaming detokenization gives, delta by delta, exactly the text decoding all ids at once
/// gives, for a byte-level BPE vocabulary (SmolLM2) where emoji and CJK characters span
/// several tokens, and for SentencePiece (tok512) whose first piece drops its space. No
/// delta ever ends inside a character.
#[test]
fn text_stream_deltas_add_up_to_the_decoded_text() {
    let assets = nf_testkit::require_assets!();
    let gguf = GgufFile::open(assets.join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let smol = Tokenizer::from_gguf(&gguf).unwrap();
    let tok512 = Tokenizer::from_llama2c(assets.join("llama2c/tok512.bin"), Some(512)).unwrap();
    for tok in [&smol, &tok512] {
        let prompt = tok.encode("Say hello", true, false).unwrap();
        let answer = tok
            .encode(" hello 👋 — 你好, déjà vu", false, false)
            .unwrap();
        let mut stream = nf_tokenizer::TextStream::new(tok, &prompt);
        let mut text = String::new();
        for &id in &answer {
            let delta = stream.push(id);
            assert!(!delta.contains('\u{FFFD}'), "{delta:?}");
            text.push_str(&delta);
        }
        text.push_str(&stream.finish());
        let all: Vec<u32> = prompt.iter().chain(&answer).copied().collect();
        let whole = tok.decode(&all);
        assert_eq!(format!("{}{text}", tok.decode(&prompt)), whole);
    }
}
