//! The trainable parameters of a run: one flat `f32` allocation for the values and one for
//! their gradients, with a table of named tensors inside them.
//!
//! One buffer (rather than a `Vec` per tensor) lets the optimizer, gradient clipping and the
//! NaN guard run as single loops over contiguous memory, and makes checkpointing a matter of
//! slicing.

use std::ops::Range;

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
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Parameter values and gradients, laid out identically.
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    pub data: Vec<f32>,
    pub grad: Vec<f32>,
    pub tensors: Vec<TensorInfo>,
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
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn value(&self, id: TensorId) -> &[f32] {
        &self.data[self.tensors[id].range()]
    }

    pub fn value_mut(&mut self, id: TensorId) -> &mut [f32] {
        let r = self.tensors[id].range();
        &mut self.data[r]
    }

    /// The value of `id` and the gradient of `id`, borrowed together (values read, gradients
    /// written, as every backward kernel needs).
    pub fn value_and_grad(&mut self, id: TensorId) -> (&[f32], &mut [f32]) {
        let r = self.tensors[id].range();
        (&self.data[r.clone()], &mut self.grad[r])
    }

    pub fn grad(&self, id: TensorId) -> &[f32] {
        &self.grad[self.tensors[id].range()]
    }

    pub fn find(&self, name: &str) -> Option<TensorId> {
        self.tensors.iter().position(|t| t.name == name)
    }

    pub fn zero_grad(&mut self) {
        self.grad.fill(0.0);
    }
}
