//! The trainable parameters of a run: one flat `f32` allocation for the values and one for
//! their gradients, with a table of named tensors inside them.
//!
//! One buffer (rather than a `Vec` per tensor) lets the optimizer, gradient clipping and the
//! NaN guard run as single loops over contiguous memory, and makes checkpointing a matter of
//! slicing.
//!
//! For bf16 training, chosen matrices are also kept packed in bf16 ([`PackedWeight`]): the
//! optimizer step repacks each one as it updates it, and any other write to the values
//! (through [`ParamStore::data_mut`] or [`ParamStore::value_mut`]) marks the packed copies
//! stale until [`ParamStore::refresh_packs`], so a stale copy is never read.

use std::ops::Range;

use nf_engine::gemm_bf16::PackedWeight;
use nf_engine::optim::{AdamWParams, adamw_step, adamw_step_repack};

/// Index of a tensor in [`ParamStore::tensors`].
pub type TensorId = usize;

/// One named tensor inside the flat buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// GGUF-style name (`blk.0.attn_q.weight`, `blk.0.attn_q.lora_a`).
    pub name: String,
    /// `[rows, cols]` for matrices, `[n]` for vectors.
    pub shape: Vec<usize>,
    /// Position in the flat buffers.
    pub offset: usize,
    /// Whether AdamW's weight decay applies (matrices yes; norms and biases no, as the
    /// Hugging Face trainer does).
    pub decay: bool,
}

impl TensorInfo {
    /// Elements in the tensor.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its elements' range in the flat buffers.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Parameter values and gradients, laid out identically.
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    data: Vec<f32>,
    /// Gradients, laid out as the values.
    pub grad: Vec<f32>,
    /// The tensors in the buffers, in order.
    pub tensors: Vec<TensorInfo>,
    /// Per tensor, its bf16 packed copy when it keeps one.
    packed: Vec<Option<PackedWeight>>,
    /// Whether every packed copy matches `data`.
    packs_fresh: bool,
}

impl ParamStore {
    /// Builds the store from `(name, shape, values, decay)` in one allocation per buffer.
    pub fn from_tensors(items: Vec<(String, Vec<usize>, Vec<f32>, bool)>) -> ParamStore {
        let total: usize = items
            .iter()
            .map(|(_, s, _, _)| s.iter().product::<usize>())
            .sum();
        let mut data = Vec::with_capacity(total);
        let mut tensors = Vec::with_capacity(items.len());
        for (name, shape, values, decay) in items {
            assert_eq!(
                values.len(),
                shape.iter().product::<usize>(),
                "tensor `{name}` does not match its shape"
            );
            tensors.push(TensorInfo {
                name,
                shape,
                offset: data.len(),
                decay,
            });
            data.extend_from_slice(&values);
        }
        ParamStore {
            grad: vec![0.0; data.len()],
            data,
            tensors,
            packed: Vec::new(),
            packs_fresh: false,
        }
    }

    /// All values, in tensor order.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// All values, for writing (loading a checkpoint); the packed copies go stale.
    pub fn data_mut(&mut self) -> &mut [f32] {
        self.packs_fresh = false;
        &mut self.data
    }

    /// Parameters in all.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The values of tensor `id`.
    pub fn value(&self, id: TensorId) -> &[f32] {
        &self.data[self.tensors[id].range()]
    }

    /// The values of tensor `id`, to write.
    pub fn value_mut(&mut self, id: TensorId) -> &mut [f32] {
        self.packs_fresh = false;
        let r = self.tensors[id].range();
        &mut self.data[r]
    }

    /// The value of `id` and the gradient of `id`, borrowed together (values read, gradients
    /// written, as every backward kernel needs).
    pub fn value_and_grad(&mut self, id: TensorId) -> (&[f32], &mut [f32]) {
        let r = self.tensors[id].range();
        (&self.data[r.clone()], &mut self.grad[r])
    }

    /// The gradient of tensor `id`.
    pub fn grad(&self, id: TensorId) -> &[f32] {
        &self.grad[self.tensors[id].range()]
    }

    /// The tensor named `name`, if there is one.
    pub fn find(&self, name: &str) -> Option<TensorId> {
        self.tensors.iter().position(|t| t.name == name)
    }

    /// Sets every gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grad.fill(0.0);
    }

    /// Keeps exactly the matrices `ids` packed in bf16 as well (none for an empty list).
    pub fn set_packed(&mut self, ids: &[TensorId]) {
        self.packed = vec![None; self.tensors.len()];
        for &id in ids {
            let t = &self.tensors[id];
            assert_eq!(t.shape.len(), 2, "only matrices are packed: `{}`", t.name);
            self.packed[id] = Some(PackedWeight::new(t.shape[0], t.shape[1]));
        }
        self.packs_fresh = false;
    }

    /// Repacks every packed matrix from its values if any was written since it was packed.
    pub fn refresh_packs(&mut self) {
        if self.packs_fresh {
            return;
        }
        for (t, pw) in self.tensors.iter().zip(&mut self.packed) {
            if let Some(pw) = pw {
                pw.pack(&self.data[t.range()]);
            }
        }
        self.packs_fresh = true;
    }

    /// The packed copy of `id`, when it keeps one and it is current.
    pub fn packed(&self, id: TensorId) -> Option<&PackedWeight> {
        if !self.packs_fresh {
            return None;
        }
        self.packed.get(id)?.as_ref()
    }

    /// One AdamW step over every tensor with the moments `m`, `v` (laid out as the values)
    /// and the hyperparameters `h` gives each tensor; packed matrices are repacked as they
    /// are updated, so afterwards every packed copy is current.
    pub fn adamw_step(
        &mut self,
        m: &mut [f32],
        v: &mut [f32],
        step: u64,
        h: impl Fn(&TensorInfo) -> AdamWParams + Send,
    ) {
        // One job on the kernel pool: each tensor's update is a parallel loop.
        nf_engine::cpu::on_pool(|| self.adamw_step_on_pool(m, v, step, h));
    }

    fn adamw_step_on_pool(
        &mut self,
        m: &mut [f32],
        v: &mut [f32],
        step: u64,
        h: impl Fn(&TensorInfo) -> AdamWParams,
    ) {
        assert!(
            m.len() == self.data.len() && v.len() == self.data.len(),
            "adamw: moments are not laid out as the parameters"
        );
        for (id, t) in self.tensors.iter().enumerate() {
            let r = t.range();
            let (p, g) = (&mut self.data[r.clone()], &self.grad[r.clone()]);
            let (m, v) = (&mut m[r.clone()], &mut v[r]);
            match self.packed.get_mut(id).and_then(Option::as_mut) {
                Some(pw) => adamw_step_repack(p, m, v, g, step, h(t), pw),
                None => adamw_step(p, m, v, g, step, h(t)),
            }
        }
        self.packs_fresh = true;
    }
}
