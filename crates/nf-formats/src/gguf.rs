//! GGUF v2/v3 reader (llama.cpp's single-file model format).
//!
//! Layout: magic `GGUF`, version u32, tensor count u64, metadata count u64, metadata
//! key/value pairs, tensor infos (name, dims, type, offset), padding to `general.alignment`
//! (default 32), tensor data. Everything is little-endian. The reader memory-maps the file,
//! parses the header eagerly, validates every size against the file length before trusting
//! it, and hands out tensor data as borrowed byte slices.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{FormatError, Result};
use crate::ggml::GgmlType;
use crate::mmap::{MappedFile, map_file};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Whether the file at `path` starts with [`GGUF_MAGIC`]: how a GGUF is told from other
/// model and tokenizer files whatever its name. A file shorter than the magic is not one;
/// a file that cannot be opened or read is an error naming it.
pub fn has_gguf_magic(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut magic))
        .map_err(|e| FormatError::io(path, e))?;
    Ok(n == 4 && &magic == GGUF_MAGIC)
}

/// The data alignment when `general.alignment` does not say.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value. Arrays keep their element type so an empty array still knows it.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// Unsigned 8-bit integer.
    U8(u8),
    /// Signed 8-bit integer.
    I8(i8),
    /// Unsigned 16-bit integer.
    U16(u16),
    /// Signed 16-bit integer.
    I16(i16),
    /// Unsigned 32-bit integer.
    U32(u32),
    /// Signed 32-bit integer.
    I32(i32),
    /// 32-bit float.
    F32(f32),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Array of one element type.
    Array(MetaArray),
    /// Unsigned 64-bit integer.
    U64(u64),
    /// Signed 64-bit integer.
    I64(i64),
    /// 64-bit float.
    F64(f64),
}

/// A homogeneous metadata array.
#[derive(Debug, Clone, PartialEq)]
pub struct MetaArray {
    /// GGUF value-type id of the elements.
    pub elem_type: u32,
    /// The elements.
    pub values: Vec<MetaValue>,
}

impl MetaValue {
    /// The value as an unsigned integer, if it is any integer type holding a non-negative value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer type that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float, if it is a float or integer type.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(&a.values),
            _ => None,
        }
    }

    /// A short description for `inspect`: scalars in full, arrays by type and length.
    pub fn summary(&self) -> String {
        match self {
            MetaValue::String(s) if s.len() > 80 => {
                format!("{:?}… ({} bytes)", &s[..s.floor_char_boundary(77)], s.len())
            }
            MetaValue::String(s) => format!("{s:?}"),
            MetaValue::Array(a) => {
                format!("[{} x {}]", a.values.len(), value_type_name(a.elem_type))
            }
            MetaValue::U8(v) => v.to_string(),
            MetaValue::I8(v) => v.to_string(),
            MetaValue::U16(v) => v.to_string(),
            MetaValue::I16(v) => v.to_string(),
            MetaValue::U32(v) => v.to_string(),
            MetaValue::I32(v) => v.to_string(),
            MetaValue::U64(v) => v.to_string(),
            MetaValue::I64(v) => v.to_string(),
            MetaValue::F32(v) => v.to_string(),
            MetaValue::F64(v) => v.to_string(),
            MetaValue::Bool(v) => v.to_string(),
        }
    }
}

fn value_type_name(id: u32) -> &'static str {
    match id {
        0 => "u8",
        1 => "i8",
        2 => "u16",
        3 => "i16",
        4 => "u32",
        5 => "i32",
        6 => "f32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "u64",
        11 => "i64",
        12 => "f64",
        _ => "?",
    }
}

/// Where a tensor lives in the file and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The tensor's GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in GGUF order: `dims[0]` is the fastest-varying (the row length), so a
    /// PyTorch weight of shape `[out, in]` is stored with `dims = [in, out]`.
    pub dims: Vec<u64>,
    /// How its elements are stored.
    pub ggml_type: GgmlType,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Elements in the tensor.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes of data; validated against the file when the header is parsed.
    pub fn n_bytes(&self) -> usize {
        self.ggml_type.bytes_for(self.n_elements()).unwrap_or(0) as usize
    }

    /// Shape in PyTorch order (slowest dimension first): `[out, in]` for a weight matrix.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// An open GGUF file: parsed header plus a memory map of the data.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    map: MappedFile,
    /// The GGUF version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    index: HashMap<String, usize>,
    /// The tensors, in file order.
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// The data section's alignment.
    pub alignment: u64,
    data_start: usize,
}

impl GgufFile {
    /// Maps and validates a GGUF file: header, metadata, tensor table and every tensor's extent.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let map = map_file(path)?;
        let header = parse_header(map.bytes()).map_err(|e| e.into_error(path))?;
        let index = header
            .metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let tensor_index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            version: header.version,
            metadata: header.metadata,
            index,
            tensors: header.tensors,
            tensor_index,
            alignment: header.alignment,
            data_start: header.data_start,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// A string metadata value by key.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(MetaValue::as_str)
    }

    /// An integer metadata value by key, whatever its integer type (negative values excluded).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(MetaValue::as_u64)
    }

    /// A numeric metadata value by key, as f64.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(MetaValue::as_f64)
    }

    /// `general.architecture`, e.g. `llama`, `qwen2`, `phi3`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// A tensor's entry by name.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor (quantized blocks as stored).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = self.data_start + info.offset as usize;
        &self.map.bytes()[start..start + info.n_bytes()]
    }

    /// Looks up a tensor by name and returns its info and raw bytes.
    pub fn tensor(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| FormatError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        Ok((info, self.tensor_data(info)))
    }
}

struct Header {
    version: u32,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_start: usize,
}

/// Parse failure before we know the path; turned into a [`FormatError`] by the caller.
enum ParseError {
    WrongFormat(String),
    Corrupt(String),
    Unsupported(String),
}

impl ParseError {
    fn into_error(self, path: &Path) -> FormatError {
        let path = path.to_path_buf();
        match self {
            ParseError::WrongFormat(reason) => FormatError::WrongFormat {
                path,
                format: "GGUF",
                reason,
            },
            ParseError::Corrupt(reason) => FormatError::Corrupt {
                path,
                format: "GGUF",
                reason,
            },
            ParseError::Unsupported(reason) => FormatError::Unsupported {
                path,
                format: "GGUF",
                reason,
            },
        }
    }
}

type PResult<T> = std::result::Result<T, ParseError>;

/// A bounds-checked little-endian cursor.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> PResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                ParseError::Corrupt(format!(
                    "truncated while reading {what} at byte {} (file is {} bytes)",
                    self.pos,
                    self.buf.len()
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn u8(&mut self, what: &str) -> PResult<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> PResult<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &str) -> PResult<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> PResult<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    /// A count that promises `count * min_elem_bytes` more bytes; refused when the file
    /// cannot hold them, so a corrupt count never drives a huge allocation.
    fn count(&mut self, min_elem_bytes: usize, what: &str) -> PResult<usize> {
        let n = self.u64(what)?;
        let need = n.checked_mul(min_elem_bytes as u64);
        match need {
            Some(need) if need <= self.remaining() as u64 => Ok(n as usize),
            _ => Err(ParseError::Corrupt(format!(
                "{what} = {n} is more than the file can hold"
            ))),
        }
    }

    fn string(&mut self, what: &str) -> PResult<String> {
        let len = self.count(1, what)?;
        let bytes = self.take(len, what)?;
        // Tokens in some vocabularies are not valid UTF-8 on their own (partial byte
        // sequences); keep them lossless rather than failing the whole file.
        Ok(match std::str::from_utf8(bytes) {
            Ok(s) => s.to_string(),
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        })
    }

    fn value(&mut self, ty: u32, depth: u32) -> PResult<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(self.u8("u8")?),
            1 => MetaValue::I8(self.u8("i8")? as i8),
            2 => MetaValue::U16(self.u16("u16")?),
            3 => MetaValue::I16(self.u16("i16")? as i16),
            4 => MetaValue::U32(self.u32("u32")?),
            5 => MetaValue::I32(self.u32("i32")? as i32),
            6 => MetaValue::F32(f32::from_bits(self.u32("f32")?)),
            7 => MetaValue::Bool(match self.u8("bool")? {
                0 => false,
                1 => true,
                b => return Err(ParseError::Corrupt(format!("bool value {b}"))),
            }),
            8 => MetaValue::String(self.string("string length")?),
            9 => {
                if depth > 4 {
                    return Err(ParseError::Corrupt("arrays nested too deeply".into()));
                }
                let elem_type = self.u32("array type")?;
                let min = match elem_type {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => {
                        return Err(ParseError::Corrupt(format!(
                            "unknown array element type {t}"
                        )));
                    }
                };
                let n = self.count(min, "array length")?;
                // The count is bounded by the file size, but a `MetaValue` is ~40 times the
                // size of a stored u8: grow as values parse rather than trusting the count.
                let mut values = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    values.push(self.value(elem_type, depth + 1)?);
                }
                MetaValue::Array(MetaArray { elem_type, values })
            }
            10 => MetaValue::U64(self.u64("u64")?),
            11 => MetaValue::I64(self.u64("i64")? as i64),
            12 => MetaValue::F64(f64::from_bits(self.u64("f64")?)),
            t => {
                return Err(ParseError::Corrupt(format!(
                    "unknown metadata value type {t}"
                )));
            }
        })
    }
}

fn parse_header(buf: &[u8]) -> PResult<Header> {
    if buf.is_empty() {
        return Err(ParseError::WrongFormat("the file is empty".into()));
    }
    if buf.len() < 4 || &buf[..4] != GGUF_MAGIC {
        let got = &buf[..buf.len().min(4)];
        return Err(ParseError::WrongFormat(format!(
            "magic is {got:02x?}, expected \"GGUF\""
        )));
    }
    let mut c = Cursor { buf, pos: 4 };
    let version = c.u32("version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(ParseError::Unsupported(
                "GGUF v1 (re-convert the model with a current llama.cpp)".into(),
            ));
        }
        v if (1..=3).contains(&v.swap_bytes()) => {
            return Err(ParseError::Unsupported("big-endian GGUF".into()));
        }
        v => return Err(ParseError::Unsupported(format!("version {v}"))),
    }
    // Each tensor info is at least 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset) bytes,
    // each metadata pair at least 8 (key len) + 4 (type) + 1.
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    let rem = c.remaining() as u64;
    if n_kv.saturating_mul(13) > rem || n_tensors.saturating_mul(24) > rem {
        return Err(ParseError::Corrupt(format!(
            "{n_tensors} tensors and {n_kv} metadata entries cannot fit in the file"
        )));
    }

    let mut metadata = Vec::with_capacity(n_kv as usize);
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let ty = c.u32("metadata type")?;
        let value = c.value(ty, 0).map_err(|e| match e {
            ParseError::Corrupt(m) => ParseError::Corrupt(format!("metadata `{key}`: {m}")),
            other => other,
        })?;
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        Some((_, v)) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
            _ => {
                return Err(ParseError::Corrupt(format!(
                    "general.alignment = {}",
                    v.summary()
                )));
            }
        },
        None => DEFAULT_ALIGNMENT,
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?;
        let n_dims = c.u32("tensor rank")?;
        if n_dims == 0 || n_dims > 4 {
            return Err(ParseError::Corrupt(format!(
                "tensor `{name}` has rank {n_dims}"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64("tensor dims")?);
        }
        let type_id = c.u32("tensor type")?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
            ParseError::Unsupported(format!("tensor `{name}` has ggml type id {type_id}"))
        })?;
        let offset = c.u64("tensor offset")?;
        if offset % alignment != 0 {
            return Err(ParseError::Corrupt(format!(
                "tensor `{name}` offset {offset} is not aligned to {alignment}"
            )));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }

    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let data_len = (buf.len() as u64).saturating_sub(data_start);
    for t in &tensors {
        let n = t.dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let bytes = n.and_then(|n| t.ggml_type.bytes_for(n)).ok_or_else(|| {
            ParseError::Corrupt(format!(
                "tensor `{}` dims {:?} overflow or are not a whole number of {} blocks",
                t.name, t.dims, t.ggml_type
            ))
        })?;
        let end = t.offset.checked_add(bytes);
        if end.is_none_or(|e| e > data_len) {
            return Err(ParseError::Corrupt(format!(
                "tensor `{}` ({} bytes at offset {}) extends past the end of the file (data section is {data_len} bytes)",
                t.name, bytes, t.offset
            )));
        }
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_start: data_start as usize,
    })
}
