//! GGUF v3 writer.
//!
//! [`GgufWriter`] collects metadata and tensors, checks each as it is added (so a bad value is
//! reported before any file is touched), and writes the file atomically: a temporary file in
//! the same folder, fsynced, then renamed over the target. The layout is the one
//! [`crate::gguf`] reads and llama.cpp writes: header, metadata, tensor infos, zero padding to
//! the alignment, then each tensor's data padded to the alignment (the last one included).
//!
//! The writer refuses what llama.cpp's loader refuses even where our reader is lenient: nested
//! arrays, tensor names of 64 bytes or more, rows that are not whole blocks, and a
//! `general.alignment` that is not a power-of-two u32.

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

use crate::error::Result;
use crate::ggml::GgmlType;
use crate::gguf::{DEFAULT_ALIGNMENT, GGUF_MAGIC, MetaValue};

/// The version this writer produces.
pub const GGUF_VERSION: u32 = 3;

/// ggml's `GGML_MAX_NAME`: tensor names must be shorter, counting the C string's NUL.
const MAX_TENSOR_NAME: usize = 64;

/// The largest alignment [`crate::gguf`] accepts.
const MAX_ALIGNMENT: u32 = 1 << 20;

/// A metadata value or tensor the writer refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GgufWriteError {
    /// A metadata entry cannot be written.
    #[error("GGUF metadata `{key}`: {reason}")]
    Metadata {
        /// Its key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A tensor cannot be written.
    #[error("GGUF tensor `{name}`: {reason}")]
    Tensor {
        /// Its name.
        name: String,
        /// Why.
        reason: String,
    },
}

struct PendingTensor<'a> {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Cow<'a, [u8]>,
}

/// Builds a GGUF file in memory order; tensor data may be borrowed (`&'a [u8]`) or owned.
#[derive(Default)]
pub struct GgufWriter<'a> {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<PendingTensor<'a>>,
}

impl std::fmt::Debug for GgufWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl<'a> GgufWriter<'a> {
    /// A writer with no metadata and no tensors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets metadata `key`. Setting a key again replaces its value in place, so keys stay
    /// unique (llama.cpp refuses files with duplicate keys) and keep their first position.
    pub fn set(&mut self, key: impl Into<String>, value: MetaValue) -> Result<(), GgufWriteError> {
        let key = key.into();
        let bad = |reason: String| GgufWriteError::Metadata {
            key: key.clone(),
            reason,
        };
        if key.is_empty() {
            return Err(bad("the key is empty".into()));
        }
        check_value(&value).map_err(bad)?;
        if key == "general.alignment" {
            match value {
                MetaValue::U32(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => {}
                _ => {
                    return Err(bad(format!(
                        "must be a u32 power of two up to {MAX_ALIGNMENT}, got {}",
                        value.summary()
                    )));
                }
            }
        }
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.metadata.push((key, value)),
        }
        Ok(())
    }

    /// Adds a tensor. `dims` are in GGUF order (`dims[0]` is the row length, so a PyTorch
    /// `[out, in]` weight has `dims = [in, out]`); `data` must hold exactly the tensor's
    /// blocks of type `ty`.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<(), GgufWriteError> {
        let name = name.into();
        let data = data.into();
        let bad = |reason: String| GgufWriteError::Tensor {
            name: name.clone(),
            reason,
        };
        if name.is_empty() || name.len() >= MAX_TENSOR_NAME {
            return Err(bad(format!(
                "names must be 1 to {} bytes long",
                MAX_TENSOR_NAME - 1
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(bad("a tensor of this name was already added".into()));
        }
        if dims.is_empty() || dims.len() > 4 {
            return Err(bad(format!("rank {} (must be 1 to 4)", dims.len())));
        }
        if !dims[0].is_multiple_of(ty.block_size() as u64) {
            return Err(bad(format!(
                "row length {} is not a whole number of {}-element {ty} blocks",
                dims[0],
                ty.block_size()
            )));
        }
        let n_bytes = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .and_then(|n| ty.bytes_for(n))
            .ok_or_else(|| bad(format!("dims {dims:?} overflow")))?;
        if data.len() as u64 != n_bytes {
            return Err(bad(format!(
                "{ty} dims {dims:?} take {n_bytes} bytes, but {} were given",
                data.len()
            )));
        }
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ty,
            data,
        });
        Ok(())
    }

    /// The alignment of the data section and of every tensor: `general.alignment` if set,
    /// else 32.
    pub fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Writes the file atomically: `path` is either left as it was or replaced whole.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::atomic::write_atomic(path, |w| self.write_to(w))
    }

    /// Serializes the whole file into `out` (no atomicity; see [`GgufWriter::write`]).
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let align = self.alignment();
        let mut w = CountingWriter { inner: out, pos: 0 };
        w.write_all(GGUF_MAGIC)?;
        w.write_all(&GGUF_VERSION.to_le_bytes())?;
        w.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        w.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in &self.metadata {
            write_string(&mut w, key)?;
            w.write_all(&type_id(value).to_le_bytes())?;
            write_value(&mut w, value)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_string(&mut w, &t.name)?;
            w.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                w.write_all(&d.to_le_bytes())?;
            }
            w.write_all(&(t.ty as u32).to_le_bytes())?;
            w.write_all(&offset.to_le_bytes())?;
            offset += (t.data.len() as u64).next_multiple_of(align);
        }
        w.pad_to(align)?;
        for t in &self.tensors {
            w.write_all(&t.data)?;
            w.pad_to(align)?;
        }
        Ok(())
    }

    /// The whole file as bytes (handy for tests and small files).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }
}

/// Checks that an array's elements all have its declared type, and that it is not nested.
fn check_value(value: &MetaValue) -> std::result::Result<(), String> {
    let MetaValue::Array(a) = value else {
        return Ok(());
    };
    match a.elem_type {
        9 => return Err("nested arrays are not supported by llama.cpp".into()),
        t if t > 12 => return Err(format!("unknown array element type {t}")),
        _ => {}
    }
    match a.values.iter().position(|v| type_id(v) != a.elem_type) {
        Some(i) => Err(format!(
            "array of type id {} has element {i} of type id {}",
            a.elem_type,
            type_id(&a.values[i])
        )),
        None => Ok(()),
    }
}

/// The GGUF value-type id of `value`.
fn type_id(value: &MetaValue) -> u32 {
    match value {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn write_string(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

/// Writes a value without its type id (arrays carry their element type and length).
fn write_value(w: &mut impl Write, value: &MetaValue) -> std::io::Result<()> {
    match value {
        MetaValue::U8(v) => w.write_all(&v.to_le_bytes()),
        MetaValue::I8(v) => w.write_all(&v.to_le_bytes()),
        MetaValue::U16(v) => w.write_all(&v.to_le_bytes()),
        MetaValue::I16(v) => w.write_all(&v.to_le_bytes()),
        MetaValue::U32(v) => w.write_all(&v.to_le_bytes()),
        MetaValue::I32(v) => w.write_all(&v.to_le_bytes()),
        MetaValue::F32(v) => w.write_all(&v.to_le_bytes()),
        MetaValue::Bool(v) => w.write_all(&[u8::from(*v)]),
        MetaValue::String(s) => write_string(w, s),
        MetaValue::Array(a) => {
            w.write_all(&a.elem_type.to_le_bytes())?;
            w.write_all(&(a.values.len() as u64).to_le_bytes())?;
            a.values.iter().try_for_each(|v| write_value(w, v))
        }
        MetaValue::U64(v) => w.write_all(&v.to_le_bytes()),
        MetaValue::I64(v) => w.write_all(&v.to_le_bytes()),
        MetaValue::F64(v) => w.write_all(&v.to_le_bytes()),
    }
}

/// Tracks the file position so padding can be computed without seeking.
struct CountingWriter<'w, W: Write> {
    inner: &'w mut W,
    pos: u64,
}

impl<W: Write> CountingWriter<'_, W> {
    fn pad_to(&mut self, align: u64) -> std::io::Result<()> {
        let pad = self.pos.next_multiple_of(align) - self.pos;
        self.write_all(&vec![0u8; pad as usize])
    }
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
