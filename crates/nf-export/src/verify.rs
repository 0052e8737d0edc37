//! The parity check: the staged export read back with our own readers and compared with
//! the fine-tuned model in memory, greedy tokens and logits on a few prompts.

use std::path::Path;

use nf_formats::{GgmlType, GgufFile};
use nf_model::Model;
use nf_model::export::parity::{Parity, Tolerance, compare, file_tolerance, tolerance};
use nf_protocol::{ErrorCode, Event};
use nf_store::resolve::{load_adapter, load_base};
use nf_tokenizer::Tokenizer;

use crate::{ExportFormat, Result, Source, fail};

/// Texts the parity check continues (and the tokenizer check encodes).
const PROMPTS: &[&str] = &[
    "Once upon a time",
    "The little dog ran to the park and",
    "Hello! What is the capital of France?",
];
/// Greedy tokens generated per prompt in the parity check.
const CHECK_TOKENS: usize = 16;
/// Size of the top-k sets compared.
pub const CHECK_TOP_K: usize = 5;

/// What the parity check found.
#[derive(Debug, Clone)]
pub struct Verification {
    /// The format that was checked.
    pub format: ExportFormat,
    /// The type the export stores its matrices in.
    pub stored: GgmlType,
    /// The export against the fine-tuned model, and the bound it is held to.
    pub parity: Parity,
    /// The bounds `parity` must stay within for the stored type.
    pub tolerance: Tolerance,
    /// The export against the fine-tuned model quantized the same way in memory (what the
    /// file must hold exactly), and its bound; the same as `parity` for f32 exports.
    pub file: Parity,
    /// The bounds `file` must stay within.
    pub file_tolerance: Tolerance,
    /// The exported tokenizer encodes the check texts as the source's does (true when the
    /// format carries no tokenizer).
    pub tokenizer_identical: bool,
    /// Which bound failed, if one did.
    pub violation: Option<String>,
}

impl Verification {
    /// Whether the export passed.
    pub fn passed(&self) -> bool {
        self.violation.is_none() && self.tokenizer_identical
    }

    /// The error a failed check ends the export with.
    pub fn check(&self) -> Result<()> {
        let hint = "nothing was written; this is a bug worth reporting (--no-verify keeps the export anyway)";
        if let Some(v) = &self.violation {
            return Err(fail(
                ErrorCode::Parity,
                format!("the export does not match the fine-tuned model: {v}"),
                hint,
            ));
        }
        if !self.tokenizer_identical {
            return Err(fail(
                ErrorCode::Parity,
                "the exported tokenizer encodes text differently from the one the model was trained with",
                hint,
            ));
        }
        Ok(())
    }

    /// The `export.verify` event.
    pub fn event(&self) -> Event {
        let (p, file) = (&self.parity, &self.file);
        Event::ExportVerify {
            format: self.format.name().into(),
            quant: self.stored.name().into(),
            prompts: p.prompts as u64,
            positions: p.positions as u64,
            tokens_identical: p.tokens_identical,
            tokens_agreeing: p.tokens_agreeing as u64,
            generated: p.generated as u64,
            max_rel_rms: p.max_rel_rms as f64,
            max_abs_diff: p.max_abs_diff as f64,
            top1_agreement: p.top1_agreement as f64,
            topk_overlap: p.topk_overlap as f64,
            bound: self.tolerance.max_rel_rms as f64,
            tokens_required: self.tolerance.identical_tokens,
            tokenizer_identical: self.tokenizer_identical,
            file_tokens_identical: file.tokens_identical,
            file_max_rel_rms: file.max_rel_rms as f64,
            file_bound: self.file_tolerance.max_rel_rms as f64,
            passed: self.passed(),
        }
    }
}

/// Reads the staged export back and compares it with the reference.
pub(crate) fn verify(
    format: ExportFormat,
    quant: GgmlType,
    src: &Source,
    staged: &Path,
    home: &Path,
) -> Result<Verification> {
    let (exported, tokenizer) = match format {
        ExportFormat::Hf => (Model::open(staged)?, Some(Tokenizer::from_hf_dir(staged)?)),
        ExportFormat::Gguf | ExportFormat::Ollama => {
            let file = if format == ExportFormat::Ollama {
                staged.join("model.gguf")
            } else {
                staged.to_path_buf()
            };
            let g = GgufFile::open(&file)?;
            (Model::from_gguf(&g)?, Some(Tokenizer::from_gguf(&g)?))
        }
        ExportFormat::Peft | ExportFormat::GgufLora => {
            let mut base = load_base(&src.base, home)?.model;
            let adapter = load_adapter(staged, &base.config)?;
            nf_model::train::adapter::merge_adapter(&mut base, &adapter);
            (base, None)
        }
    };
    let tok = &src.tokenizer;
    let mut texts: Vec<String> = PROMPTS.iter().map(|s| s.to_string()).collect();
    texts.push("Ünïcode, numbers 12345 and\nnew lines\t tabs.".into());
    let tokenizer_identical = match &tokenizer {
        Some(t) => texts.iter().all(|s| {
            let a = tok.encode(s, tok.add_bos_default(), true).ok();
            let b = t.encode(s, t.add_bos_default(), true).ok();
            a.is_some() && a == b
        }),
        None => true,
    };
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|s| tok.encode(s, tok.add_bos_default(), false))
        .collect::<Result<_, _>>()?;
    let parity = compare(
        &src.reference,
        &exported,
        &prompts,
        CHECK_TOKENS,
        CHECK_TOP_K,
    )?;
    let stored = if matches!(format, ExportFormat::Gguf | ExportFormat::Ollama) {
        quant
    } else {
        GgmlType::F32
    };
    // A quantized export is held to two bounds: the quantization error budget against the
    // fine-tuned model, and exactness against that model quantized the same way in memory
    // (which is what the file must hold).
    let file = if stored == GgmlType::F32 {
        parity.clone()
    } else {
        let same = nf_model::export::gguf::quantized_like_export(&src.reference, quant)?;
        compare(&same, &exported, &prompts, CHECK_TOKENS, CHECK_TOP_K)?
    };
    let tol = tolerance(stored);
    let file_tol = file_tolerance();
    let violation = parity.violation(tol).or_else(|| {
        file.violation(file_tol)
            .map(|v| format!("against the model quantized the same way in memory: {v}"))
    });
    Ok(Verification {
        format,
        stored,
        parity,
        tolerance: tol,
        file,
        file_tolerance: file_tol,
        tokenizer_identical,
        violation,
    })
}
