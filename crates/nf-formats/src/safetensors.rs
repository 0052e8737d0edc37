//! safetensors: an 8-byte little-endian header length, a JSON header mapping tensor names to
//! `{dtype, shape, data_offsets}`, then the raw little-endian data. Single files and sharded
//! checkpoints (`model.safetensors.index.json`) are both read through [`SafeTensorsDir`].

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use crate::atomic::write_atomic;
use crate::error::{FormatError, Result};
use crate::mmap::{MappedFile, map_file};

/// Header sizes above this are refused: real headers are kilobytes; a corrupt length must
/// not make us parse gigabytes of garbage as JSON.
const MAX_HEADER: u64 = 100 << 20;

/// Element types we can convert to f32. Others are listed but refused on conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StDtype {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// Any other type: its name and element size.
    Other(&'static str, usize),
}

impl StDtype {
    fn parse(s: &str) -> Option<StDtype> {
        Some(match s {
            "F32" => StDtype::F32,
            "F16" => StDtype::F16,
            "BF16" => StDtype::BF16,
            "F64" => StDtype::Other("F64", 8),
            "I64" => StDtype::Other("I64", 8),
            "U64" => StDtype::Other("U64", 8),
            "I32" => StDtype::Other("I32", 4),
            "U32" => StDtype::Other("U32", 4),
            "I16" => StDtype::Other("I16", 2),
            "U16" => StDtype::Other("U16", 2),
            "I8" => StDtype::Other("I8", 1),
            "U8" => StDtype::Other("U8", 1),
            "BOOL" => StDtype::Other("BOOL", 1),
            _ => return None,
        })
    }

    /// The type's name as the header spells it.
    pub fn name(self) -> &'static str {
        match self {
            StDtype::F32 => "F32",
            StDtype::F16 => "F16",
            StDtype::BF16 => "BF16",
            StDtype::Other(n, _) => n,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StDtype::F32 => 4,
            StDtype::F16 | StDtype::BF16 => 2,
            StDtype::Other(_, s) => s,
        }
    }
}

/// One tensor's entry in the header.
#[derive(Debug, Clone)]
pub struct StTensor {
    /// The tensor's name.
    pub name: String,
    /// Its element type.
    pub dtype: StDtype,
    /// Its shape.
    pub shape: Vec<usize>,
    start: usize,
    end: usize,
}

impl StTensor {
    /// Elements in the tensor.
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// One open `.safetensors` file.
#[derive(Debug)]
pub struct SafeTensors {
    path: PathBuf,
    map: MappedFile,
    data_start: usize,
    /// The tensors, in header order.
    pub tensors: Vec<StTensor>,
    index: HashMap<String, usize>,
    /// The free-form `__metadata__` string map.
    pub metadata: BTreeMap<String, String>,
}

fn corrupt(path: &Path, reason: impl Into<String>) -> FormatError {
    FormatError::Corrupt {
        path: path.to_path_buf(),
        format: "safetensors",
        reason: reason.into(),
    }
}

impl SafeTensors {
    /// Maps and validates a `.safetensors` file: header JSON and every tensor's extent.
    pub fn open(path: impl AsRef<Path>) -> Result<SafeTensors> {
        let path = path.as_ref();
        let map = map_file(path)?;
        let buf = map.bytes();
        if buf.len() < 8 {
            return Err(FormatError::WrongFormat {
                path: path.to_path_buf(),
                format: "safetensors",
                reason: format!("file is only {} bytes", buf.len()),
            });
        }
        let n = u64::from_le_bytes(buf[..8].try_into().unwrap());
        if n > MAX_HEADER || n > (buf.len() - 8) as u64 {
            return Err(corrupt(
                path,
                format!(
                    "header length {n} does not fit in a {}-byte file",
                    buf.len()
                ),
            ));
        }
        let data_start = 8 + n as usize;
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&buf[8..data_start]).map_err(|e| FormatError::WrongFormat {
                path: path.to_path_buf(),
                format: "safetensors",
                reason: format!("header is not JSON: {e}"),
            })?;
        let data_len = buf.len() - data_start;
        let mut tensors = Vec::new();
        let mut metadata = BTreeMap::new();
        for (name, v) in header {
            if name == "__metadata__" {
                if let Some(m) = v.as_object() {
                    for (k, v) in m {
                        metadata.insert(
                            k.clone(),
                            v.as_str().map_or_else(|| v.to_string(), str::to_string),
                        );
                    }
                }
                continue;
            }
            tensors.push(parse_entry(path, name, &v, data_len)?);
        }
        // Keep file order (by offset) so listings are stable and match other tools.
        tensors.sort_by_key(|t| t.start);
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(SafeTensors {
            path: path.to_path_buf(),
            map,
            data_start,
            tensors,
            index,
            metadata,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A tensor's entry by name.
    pub fn get(&self, name: &str) -> Option<&StTensor> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor's bytes.
    pub fn data(&self, t: &StTensor) -> &[u8] {
        &self.map.bytes()[self.data_start + t.start..self.data_start + t.end]
    }

    /// The tensor converted to f32, with its shape.
    pub fn to_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.get(name).ok_or_else(|| FormatError::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
        })?;
        let data =
            convert_to_f32(t.dtype, self.data(t)).ok_or_else(|| FormatError::Unsupported {
                path: self.path.clone(),
                format: "safetensors",
                reason: format!(
                    "tensor `{name}` has dtype {}, expected F32, F16 or BF16",
                    t.dtype.name()
                ),
            })?;
        Ok((t.shape.clone(), data))
    }
}

fn parse_entry(
    path: &Path,
    name: String,
    v: &serde_json::Value,
    data_len: usize,
) -> Result<StTensor> {
    let bad = |what: &str| corrupt(path, format!("tensor `{name}`: {what}"));
    let dtype_s = v
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or_else(|| bad("missing dtype"))?;
    let dtype = StDtype::parse(dtype_s).ok_or_else(|| FormatError::Unsupported {
        path: path.to_path_buf(),
        format: "safetensors",
        reason: format!("tensor `{name}` has dtype {dtype_s}"),
    })?;
    let shape: Vec<usize> = v
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or_else(|| bad("missing shape"))?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("shape is not a list of sizes"))?;
    let offs = v
        .get("data_offsets")
        .and_then(|o| o.as_array())
        .ok_or_else(|| bad("missing data_offsets"))?;
    let (start, end) = match offs.as_slice() {
        [a, b] => (
            a.as_u64().ok_or_else(|| bad("bad offset"))?,
            b.as_u64().ok_or_else(|| bad("bad offset"))?,
        ),
        _ => return Err(bad("data_offsets is not [begin, end]")),
    };
    if start > end || end > data_len as u64 {
        return Err(bad(&format!(
            "data [{start}, {end}) lies outside the {data_len}-byte data section"
        )));
    }
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n.and_then(|n| n.checked_mul(dtype.size())) != Some((end - start) as usize) {
        return Err(bad(&format!(
            "shape {shape:?} of {dtype_s} does not match its {} bytes",
            end - start
        )));
    }
    Ok(StTensor {
        name,
        dtype,
        shape,
        start: start as usize,
        end: end as usize,
    })
}

/// Converts little-endian F32/F16/BF16 bytes to f32; `None` for other dtypes.
pub fn convert_to_f32(dtype: StDtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        StDtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        StDtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        StDtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        StDtype::Other(..) => return None,
    })
}

/// The safetensors of a model folder: `model.safetensors`, or the shards named by
/// `model.safetensors.index.json`, or a lone `*.safetensors` file.
#[derive(Debug)]
pub struct SafeTensorsDir {
    /// The files, each open.
    pub files: Vec<SafeTensors>,
    index: HashMap<String, usize>,
}

impl SafeTensorsDir {
    /// Opens a model folder's safetensors.
    pub fn open(dir: impl AsRef<Path>) -> Result<SafeTensorsDir> {
        let dir = dir.as_ref();
        let index_path = dir.join("model.safetensors.index.json");
        let paths: Vec<PathBuf> = if index_path.is_file() {
            let text = std::fs::read_to_string(&index_path)
                .map_err(|e| FormatError::io(&index_path, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| corrupt(&index_path, format!("not JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| corrupt(&index_path, "missing weight_map"))?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect();
            files.sort();
            files.dedup();
            for f in &files {
                if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                    return Err(corrupt(
                        &index_path,
                        format!("shard name `{f}` is not a plain file name"),
                    ));
                }
            }
            files.into_iter().map(|f| dir.join(f)).collect()
        } else if dir.join("model.safetensors").is_file() {
            vec![dir.join("model.safetensors")]
        } else {
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| FormatError::io(dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(FormatError::io(
                    dir,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no *.safetensors file in this folder",
                    ),
                ));
            }
            found
        };
        let files: Vec<SafeTensors> = paths.iter().map(SafeTensors::open).collect::<Result<_>>()?;
        let mut index = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            for t in &f.tensors {
                index.insert(t.name.clone(), i);
            }
        }
        Ok(SafeTensorsDir { files, index })
    }

    /// Whether any file holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The file holding `name` and its entry.
    pub fn get(&self, name: &str) -> Option<(&SafeTensors, &StTensor)> {
        let f = &self.files[*self.index.get(name)?];
        Some((f, f.get(name)?))
    }

    /// A tensor's shape and values converted to f32.
    pub fn to_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        match self.index.get(name) {
            Some(&i) => self.files[i].to_f32(name),
            None => Err(FormatError::MissingTensor {
                path: self.files[0].path.clone(),
                name: name.to_string(),
            }),
        }
    }

    /// Every tensor's name.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.files
            .iter()
            .flat_map(|f| f.tensors.iter().map(|t| t.name.as_str()))
    }
}

/// A tensor to write: name, dtype, shape, little-endian bytes.
#[derive(Debug)]
pub struct TensorToWrite<'a> {
    /// The tensor's name.
    pub name: String,
    /// Its element type.
    pub dtype: StDtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its bytes, little-endian.
    pub data: &'a [u8],
}

/// Writes a single `.safetensors` file atomically. Tensors are laid out in the order given;
/// the header is padded with spaces to a multiple of 8 bytes as the reference writer does.
pub fn write_safetensors(
    path: &Path,
    tensors: &[TensorToWrite<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).expect("string map serializes"),
        );
    }
    let mut offset = 0usize;
    for t in tensors {
        assert_eq!(
            t.data.len(),
            t.shape.iter().product::<usize>() * t.dtype.size(),
            "tensor `{}` size mismatch",
            t.name
        );
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, offset + t.data.len()]}),
        );
        offset += t.data.len();
    }
    let mut json = serde_json::to_vec(&header).expect("header serializes");
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    write_atomic(path, |w| {
        w.write_all(&(json.len() as u64).to_le_bytes())?;
        w.write_all(&json)?;
        for t in tensors {
            w.write_all(t.data)?;
        }
        Ok(())
    })
}

/// f32 values as little-endian bytes, for [`TensorToWrite`].
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
