//! llama2.c checkpoints (Karpathy's `run.c` format).
//!
//! Three layouts exist:
//! - legacy (v0): 7 × i32 header `dim, hidden_dim, n_layers, n_heads, n_kv_heads,
//!   vocab_size, seq_len` (a negative vocab size means the classifier is not shared with the
//!   embedding), then f32 weights: embedding, per-kind stacks of layer weights, final norm,
//!   two RoPE tables (`seq_len × head_dim/2` each, ignored), and the classifier if unshared.
//! - `ak42` v1: a 256-byte header (magic `0x616b3432`, version, the 7 params, a shared
//!   classifier flag), then f32: norms first, then embedding and layer weights.
//! - `ak42` v2: like v1 plus a group size, norms in f32, every matrix as int8 Q8_0-style
//!   groups (all int8 values of a matrix, then its f32 group scales).
//!
//! All three are exposed under GGUF tensor names (`token_embd.weight`, `blk.N.attn_q.weight`,
//! ...), because llama2.c and GGUF `llama` files share the interleaved RoPE layout.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic;
use crate::error::{FormatError, Result};
use crate::mmap::map_file;

const MAGIC: u32 = 0x616b_3432;
const V1_HEADER: usize = 256;

/// The hyper-parameters in a llama2.c header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Llama2cConfig {
    /// Model width.
    pub dim: usize,
    /// Feed-forward width.
    pub hidden_dim: usize,
    /// Layers.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Context length.
    pub seq_len: usize,
    /// Whether the classifier is the token embedding (a positive vocabulary size in the header).
    pub shared_classifier: bool,
}

impl Llama2cConfig {
    /// Channels per head.
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }
    /// Width of the key and value projections.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim()
    }
}

/// A loaded llama2.c checkpoint: config and f32 tensors under GGUF names.
#[derive(Debug)]
pub struct Llama2cFile {
    /// The file read.
    pub path: PathBuf,
    /// 0 for the legacy header, else the `ak42` version.
    pub version: u32,
    /// The header's hyper-parameters.
    pub config: Llama2cConfig,
    /// Name → (shape `[out, in]` or `[n]`, values).
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

fn bad(path: &Path, reason: impl Into<String>) -> FormatError {
    FormatError::Corrupt {
        path: path.to_path_buf(),
        format: "llama2.c",
        reason: reason.into(),
    }
}

fn i32_at(buf: &[u8], i: usize) -> i32 {
    i32::from_le_bytes(buf[i * 4..i * 4 + 4].try_into().unwrap())
}

/// Tensor kinds in the order each layout stores them. `Norms` are the f32 RMSNorm weights.
fn layer_matrices(c: &Llama2cConfig) -> [(&'static str, [usize; 2]); 7] {
    let (d, h, kv) = (c.dim, c.hidden_dim, c.kv_dim());
    [
        ("attn_q", [d, d]),
        ("attn_k", [kv, d]),
        ("attn_v", [kv, d]),
        ("attn_output", [d, d]),
        ("ffn_gate", [h, d]), // llama2.c's w1
        ("ffn_down", [d, h]), // w2
        ("ffn_up", [h, d]),   // w3
    ]
}

impl Llama2cFile {
    /// Reads a llama2.c checkpoint (legacy header, or `ak42` version 1 or 2), validating every size against the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Llama2cFile> {
        let path = path.as_ref();
        let map = map_file(path)?;
        let buf = map.bytes();
        if buf.len() < 28 {
            return Err(FormatError::WrongFormat {
                path: path.into(),
                format: "llama2.c",
                reason: format!("file is only {} bytes", buf.len()),
            });
        }
        let (version, params_at) = if u32::from_le_bytes(buf[..4].try_into().unwrap()) == MAGIC {
            (i32_at(buf, 1), 2)
        } else {
            (0, 0)
        };
        if !(0..=2).contains(&version) {
            return Err(FormatError::Unsupported {
                path: path.into(),
                format: "llama2.c",
                reason: format!("ak42 version {version}"),
            });
        }
        if version > 0 && buf.len() < V1_HEADER {
            return Err(bad(path, "truncated header"));
        }
        let p: Vec<i32> = (0..7).map(|i| i32_at(buf, params_at + i)).collect();
        let shared_classifier = if version == 0 { p[5] > 0 } else { buf[36] != 0 };
        let config = Llama2cConfig {
            dim: p[0].max(0) as usize,
            hidden_dim: p[1].max(0) as usize,
            n_layers: p[2].max(0) as usize,
            n_heads: p[3].max(0) as usize,
            n_kv_heads: p[4].max(0) as usize,
            vocab_size: p[5].unsigned_abs() as usize,
            seq_len: p[6].max(0) as usize,
            shared_classifier,
        };
        validate(path, &p, &config)?;
        let tensors = match version {
            0 => read_legacy(path, buf, &config)?,
            1 => read_v1(path, &buf[V1_HEADER..], &config)?,
            _ => {
                // struct.pack writes the flag byte at 36 and the group size right after it.
                let group = i32::from_le_bytes(buf[37..41].try_into().unwrap());
                if group <= 0 || !config.dim.is_multiple_of(group as usize) {
                    return Err(bad(
                        path,
                        format!("group size {group} does not divide dim {}", config.dim),
                    ));
                }
                read_v2(path, &buf[V1_HEADER..], &config, group as usize)?
            }
        };
        Ok(Llama2cFile {
            path: path.to_path_buf(),
            version: version as u32,
            config,
            tensors,
        })
    }
}

fn validate(path: &Path, p: &[i32], c: &Llama2cConfig) -> Result<()> {
    let plausible = p
        .iter()
        .enumerate()
        .all(|(i, &v)| if i == 5 { v != 0 } else { v > 0 })
        && p.iter().all(|&v| v.unsigned_abs() <= 1 << 24)
        && c.n_layers <= crate::MAX_LAYERS;
    if !plausible {
        return Err(FormatError::WrongFormat {
            path: path.into(),
            format: "llama2.c",
            reason: format!(
                "header {p:?} is not a plausible model (dim, hidden, layers, heads, kv heads, vocab, seq_len)"
            ),
        });
    }
    if !c.dim.is_multiple_of(c.n_heads)
        || !c.n_heads.is_multiple_of(c.n_kv_heads)
        || !c.head_dim().is_multiple_of(2)
    {
        return Err(bad(
            path,
            format!(
                "{} heads / {} kv heads do not divide dim {}",
                c.n_heads, c.n_kv_heads, c.dim
            ),
        ));
    }
    Ok(())
}

/// Number of f32 values in all layer matrices of one kind, for every layer.
fn expected_len(path: &Path, have: usize, need: usize, what: &str) -> Result<()> {
    if have < need {
        return Err(bad(
            path,
            format!("truncated: {what} needs {need} bytes, {have} remain"),
        ));
    }
    Ok(())
}

/// A little reader over f32 values that tracks position and checks bounds.
struct F32s<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
}

impl F32s<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<Vec<f32>> {
        let bytes = n
            .checked_mul(4)
            .ok_or_else(|| bad(self.path, "size overflow"))?;
        expected_len(self.path, self.buf.len() - self.pos, bytes, what)?;
        let v = self.buf[self.pos..self.pos + bytes]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        self.pos += bytes;
        Ok(v)
    }
    fn skip(&mut self, n: usize, what: &str) -> Result<()> {
        let bytes = n
            .checked_mul(4)
            .ok_or_else(|| bad(self.path, "size overflow"))?;
        expected_len(self.path, self.buf.len() - self.pos, bytes, what)?;
        self.pos += bytes;
        Ok(())
    }
    fn finish(&self) -> Result<()> {
        let extra = self.buf.len() - self.pos;
        if extra != 0 {
            return Err(bad(
                self.path,
                format!(
                    "{extra} unexpected bytes after the last tensor (wrong header or classifier flag?)"
                ),
            ));
        }
        Ok(())
    }
}

type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn read_norms(r: &mut F32s<'_>, c: &Llama2cConfig, kind: &str, t: &mut Tensors) -> Result<()> {
    for l in 0..c.n_layers {
        t.insert(
            format!("blk.{l}.{kind}.weight"),
            (vec![c.dim], r.take(c.dim, kind)?),
        );
    }
    Ok(())
}

fn read_matrices_f32(
    r: &mut F32s<'_>,
    c: &Llama2cConfig,
    t: &mut Tensors,
    skip_norm_ffn: bool,
) -> Result<()> {
    for (i, (kind, shape)) in layer_matrices(c).into_iter().enumerate() {
        // Legacy files store rms_ffn between wo and w1.
        if skip_norm_ffn && i == 4 {
            read_norms(r, c, "ffn_norm", t)?;
        }
        for l in 0..c.n_layers {
            t.insert(
                format!("blk.{l}.{kind}.weight"),
                (shape.to_vec(), r.take(shape[0] * shape[1], kind)?),
            );
        }
    }
    Ok(())
}

fn read_legacy(path: &Path, buf: &[u8], c: &Llama2cConfig) -> Result<Tensors> {
    let mut r = F32s { path, buf, pos: 28 };
    let mut t = Tensors::new();
    t.insert(
        "token_embd.weight".into(),
        (
            vec![c.vocab_size, c.dim],
            r.take(c.vocab_size * c.dim, "embedding")?,
        ),
    );
    read_norms(&mut r, c, "attn_norm", &mut t)?;
    read_matrices_f32(&mut r, c, &mut t, true)?;
    t.insert(
        "output_norm.weight".into(),
        (vec![c.dim], r.take(c.dim, "final norm")?),
    );
    r.skip(c.seq_len * c.head_dim(), "RoPE tables")?;
    if !c.shared_classifier {
        t.insert(
            "output.weight".into(),
            (
                vec![c.vocab_size, c.dim],
                r.take(c.vocab_size * c.dim, "classifier")?,
            ),
        );
    }
    r.finish()?;
    Ok(t)
}

fn read_v1(path: &Path, buf: &[u8], c: &Llama2cConfig) -> Result<Tensors> {
    let mut r = F32s { path, buf, pos: 0 };
    let mut t = Tensors::new();
    read_norms(&mut r, c, "attn_norm", &mut t)?;
    read_norms(&mut r, c, "ffn_norm", &mut t)?;
    t.insert(
        "output_norm.weight".into(),
        (vec![c.dim], r.take(c.dim, "final norm")?),
    );
    t.insert(
        "token_embd.weight".into(),
        (
            vec![c.vocab_size, c.dim],
            r.take(c.vocab_size * c.dim, "embedding")?,
        ),
    );
    read_matrices_f32(&mut r, c, &mut t, false)?;
    if !c.shared_classifier {
        t.insert(
            "output.weight".into(),
            (
                vec![c.vocab_size, c.dim],
                r.take(c.vocab_size * c.dim, "classifier")?,
            ),
        );
    }
    r.finish()?;
    Ok(t)
}

fn read_v2(path: &Path, buf: &[u8], c: &Llama2cConfig, group: usize) -> Result<Tensors> {
    let mut r = F32s { path, buf, pos: 0 };
    let mut t = Tensors::new();
    read_norms(&mut r, c, "attn_norm", &mut t)?;
    read_norms(&mut r, c, "ffn_norm", &mut t)?;
    t.insert(
        "output_norm.weight".into(),
        (vec![c.dim], r.take(c.dim, "final norm")?),
    );
    let mut q8 = |name: String, shape: [usize; 2], r: &mut F32s<'_>| -> Result<()> {
        let n = shape[0] * shape[1];
        expected_len(path, r.buf.len() - r.pos, n, &name)?;
        let q = &r.buf[r.pos..r.pos + n];
        r.pos += n;
        let scales = r.take(n / group, &name)?;
        let values = q
            .iter()
            .enumerate()
            .map(|(i, &b)| b as i8 as f32 * scales[i / group])
            .collect();
        t.insert(name, (shape.to_vec(), values));
        Ok(())
    };
    q8("token_embd.weight".into(), [c.vocab_size, c.dim], &mut r)?;
    for (kind, shape) in layer_matrices(c) {
        for l in 0..c.n_layers {
            q8(format!("blk.{l}.{kind}.weight"), shape, &mut r)?;
        }
    }
    if !c.shared_classifier {
        q8("output.weight".into(), [c.vocab_size, c.dim], &mut r)?;
    }
    r.finish()?;
    Ok(t)
}

/// What a writer emits, in file order.
enum Item {
    /// A tensor by name; `true` to store it as int8 groups (v2).
    Tensor(String, bool),
    /// The legacy layout's two RoPE tables (zeros: readers ignore them).
    RopeTables,
}

fn layer_names(c: &Llama2cConfig, kind: &str, quantize: bool) -> Vec<Item> {
    (0..c.n_layers)
        .map(|l| Item::Tensor(format!("blk.{l}.{kind}.weight"), quantize))
        .collect()
}

/// Writes a checkpoint in the legacy v0, `ak42` v1 (f32) or v2 (int8 groups) layout.
/// Used to test the readers against each other and to export for llama2.c's `run.c`.
pub fn write_llama2c(
    path: &Path,
    version: u32,
    c: &Llama2cConfig,
    tensors: &Tensors,
    group: usize,
) -> Result<()> {
    let q = version == 2;
    let mut order = Vec::new();
    if version == 0 {
        order.push(Item::Tensor("token_embd.weight".into(), false));
        order.extend(layer_names(c, "attn_norm", false));
        for (i, (kind, _)) in layer_matrices(c).iter().enumerate() {
            if i == 4 {
                order.extend(layer_names(c, "ffn_norm", false));
            }
            order.extend(layer_names(c, kind, false));
        }
        order.push(Item::Tensor("output_norm.weight".into(), false));
        order.push(Item::RopeTables);
    } else {
        order.extend(layer_names(c, "attn_norm", false));
        order.extend(layer_names(c, "ffn_norm", false));
        order.push(Item::Tensor("output_norm.weight".into(), false));
        order.push(Item::Tensor("token_embd.weight".into(), q));
        for (kind, _) in layer_matrices(c) {
            order.extend(layer_names(c, kind, q));
        }
    }
    if !c.shared_classifier {
        order.push(Item::Tensor("output.weight".into(), q));
    }
    for item in &order {
        if let Item::Tensor(name, _) = item
            && !tensors.contains_key(name)
        {
            return Err(FormatError::MissingTensor {
                path: path.into(),
                name: name.clone(),
            });
        }
    }
    let vocab = if c.shared_classifier || version > 0 {
        c.vocab_size as i32
    } else {
        -(c.vocab_size as i32)
    };
    let params = [c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads].map(|p| p as i32);
    write_atomic(path, |w| {
        let mut header = Vec::new();
        if version > 0 {
            header.extend(MAGIC.to_le_bytes());
            header.extend((version as i32).to_le_bytes());
        }
        header.extend(
            params
                .iter()
                .chain(&[vocab, c.seq_len as i32])
                .flat_map(|p| p.to_le_bytes()),
        );
        if version > 0 {
            header.push(c.shared_classifier as u8);
            if version == 2 {
                header.extend((group as i32).to_le_bytes());
            }
            header.resize(V1_HEADER, 0);
        }
        w.write_all(&header)?;
        for item in &order {
            match item {
                Item::RopeTables => w.write_all(&vec![0u8; c.seq_len * c.head_dim() * 4])?,
                Item::Tensor(name, true) => {
                    let (q, s) = quantize_groups(&tensors[name].1, group);
                    w.write_all(&q.iter().map(|&x| x as u8).collect::<Vec<u8>>())?;
                    w.write_all(&s.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())?;
                }
                Item::Tensor(name, false) => {
                    w.write_all(
                        &tensors[name]
                            .1
                            .iter()
                            .flat_map(|x| x.to_le_bytes())
                            .collect::<Vec<u8>>(),
                    )?;
                }
            }
        }
        Ok(())
    })
}

/// Symmetric int8 quantization in groups, as llama2.c's `export.py` `quantize_q80` does.
fn quantize_groups(v: &[f32], group: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(v.len());
    let mut s = Vec::with_capacity(v.len() / group);
    for g in v.chunks(group) {
        let max = g.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let scale = max / 127.0;
        s.push(scale);
        q.extend(g.iter().map(|&x| {
            if scale == 0.0 {
                0
            } else {
                (x / scale).round() as i8
            }
        }));
    }
    (q, s)
}
