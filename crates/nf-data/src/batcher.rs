//! Training batches: `batch_size` windows of `seq_len + 1` consecutive tokens, inputs
//! `window[..T]` and targets `window[1..]`, with a position that can be saved in a
//! checkpoint and restored so a resumed run sees exactly the batches an uninterrupted run
//! would have seen.

use serde::{Deserialize, Serialize};

use super::error::{DatasetError, Result};
use super::rng::Rng;

/// How window start positions are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// Uniformly random starts anywhere in the data (seeded), as nanoGPT does. Windows
    /// overlap and repeat; good for small datasets trained for many steps.
    Random,
    /// Packed consecutive windows, window `k` starting at token `k * seq_len` (each
    /// window's last target is the next window's first input), as llm.c's loader does.
    /// After the last window that fits, the next batch starts again at token 0 and the
    /// epoch count goes up; a window never wraps, so up to `seq_len - 1` tokens at the end
    /// are unused in each pass.
    Sequential,
}

impl std::str::FromStr for Sampling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "random" => Ok(Sampling::Random),
            "sequential" => Ok(Sampling::Sequential),
            _ => Err(format!(
                "unknown sampling `{s}`; expected `random` or `sequential`"
            )),
        }
    }
}

/// Everything needed to continue a [`Batcher`] exactly where it was, for checkpoints.
/// The shape fields (`n_tokens`, `batch_size`, `seq_len`, `sampling`) are checked on
/// [`Batcher::restore`], so a state from another dataset or configuration is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatcherState {
    /// The random generator (used by [`Sampling::Random`]).
    pub rng: Rng,
    /// Windows served in the current epoch (the next window's index in `Sequential`).
    pub cursor: u64,
    /// Completed epochs (passes of `windows_per_epoch` windows).
    pub epoch: u64,
    /// Batches served since the start.
    pub batches: u64,
    /// Tokens in the data the batcher was made over.
    pub n_tokens: u64,
    /// Windows per batch.
    pub batch_size: usize,
    /// Tokens per input row.
    pub seq_len: usize,
    /// The sampling mode.
    pub sampling: Sampling,
}

/// The target id of a position whose loss is masked out: equal to `nf_engine::loss::IGNORE`
/// (this crate does not depend on the engine; a test in `nf-train` holds them equal).
pub const MASKED_TARGET: u32 = u32::MAX;

/// Produces training batches from a token array. See [`Sampling`] for the two modes.
#[derive(Debug)]
pub struct Batcher {
    tokens: Vec<u32>,
    /// Per token: 1 where it is a training target, 0 where its loss is masked (prompts and
    /// earlier turns of chat data). `None`: every token is a target.
    mask: Option<Vec<u8>>,
    /// Ascending offsets into `tokens` where each packed example begins (see
    /// [`Batcher::with_example_starts`]). Empty: nothing known about examples.
    example_starts: Vec<u64>,
    /// The first token offset of each window of the last batch.
    window_firsts: Vec<usize>,
    batch_size: usize,
    seq_len: usize,
    sampling: Sampling,
    windows_per_epoch: u64,
    rng: Rng,
    cursor: u64,
    epoch: u64,
    batches: u64,
}

impl Batcher {
    /// A batcher over `tokens`, seeded with `seed` (only [`Sampling::Random`] uses it).
    ///
    /// Errors with [`DatasetError::TooFewTokens`] when `tokens` is shorter than one window
    /// (`seq_len + 1`), carrying both numbers so the caller can suggest a shorter sequence
    /// length or more data.
    pub fn new(
        tokens: Vec<u32>,
        batch_size: usize,
        seq_len: usize,
        sampling: Sampling,
        seed: u64,
    ) -> Result<Batcher> {
        if batch_size == 0 || seq_len == 0 {
            return Err(DatasetError::InvalidConfig(format!(
                "batch size {batch_size} and sequence length {seq_len} must both be at least 1"
            )));
        }
        if tokens.len() < seq_len + 1 {
            return Err(DatasetError::TooFewTokens {
                tokens: tokens.len(),
                seq_len,
                needed: seq_len + 1,
            });
        }
        // Windows starting at k * seq_len with k * seq_len + seq_len + 1 <= n.
        let windows_per_epoch = ((tokens.len() - 1) / seq_len) as u64;
        Ok(Batcher {
            tokens,
            mask: None,
            example_starts: Vec::new(),
            window_firsts: Vec::with_capacity(batch_size),
            batch_size,
            seq_len,
            sampling,
            windows_per_epoch,
            rng: Rng::new(seed),
            cursor: 0,
            epoch: 0,
            batches: 0,
        })
    }

    /// Masks the loss of tokens whose `mask` entry is 0 (one entry per token, as `ingest`
    /// writes `train.mask`): their target becomes [`MASKED_TARGET`].
    pub fn with_mask(mut self, mask: Vec<u8>) -> Result<Batcher> {
        if mask.len() != self.tokens.len() {
            return Err(DatasetError::InvalidConfig(format!(
                "the loss mask has {} entries for {} tokens",
                mask.len(),
                self.tokens.len()
            )));
        }
        self.mask = Some(mask);
        Ok(self)
    }

    /// Records where the packed examples begin (ascending offsets into the tokens, as
    /// `ingest` writes `train.starts`), so that [`Batcher::next_batch_with_starts`] can say,
    /// for every position of a window, where its example begins.
    pub fn with_example_starts(mut self, starts: Vec<u64>) -> Result<Batcher> {
        let n = self.tokens.len() as u64;
        if starts.windows(2).any(|w| w[0] >= w[1]) || starts.last().is_some_and(|&s| s >= n) {
            return Err(DatasetError::InvalidConfig(format!(
                "example starts must ascend and lie below the {n} tokens"
            )));
        }
        self.example_starts = starts;
        Ok(self)
    }

    /// Whether example starts were given.
    pub fn has_example_starts(&self) -> bool {
        !self.example_starts.is_empty()
    }

    /// [`Batcher::next_batch`], also filling `starts` (`batch_size * seq_len`) with, for each
    /// position, the position within its window where its example begins: 0 up to the
    /// first example that begins inside the window, then that example's first position,
    /// and so on. Without example starts every entry is 0. Returns whether example starts
    /// were given (see [`Batcher::has_example_starts`]), so a caller can skip passing the
    /// trivial all-zero starts on.
    pub fn next_batch_with_starts(
        &mut self,
        inputs: &mut [u32],
        targets: &mut [u32],
        starts: &mut [u32],
    ) -> bool {
        let t = self.seq_len;
        assert_eq!(
            starts.len(),
            self.batch_size * t,
            "starts must hold batch_size * seq_len entries"
        );
        self.fill_batch(inputs, targets);
        for (row, &first) in starts.chunks_exact_mut(t).zip(&self.window_firsts) {
            // The first example beginning after the window's first token.
            let mut k = self.example_starts.partition_point(|&s| s <= first as u64);
            let mut current = 0;
            for (r, s) in row.iter_mut().enumerate() {
                let pos = (first + r) as u64;
                while k < self.example_starts.len() && self.example_starts[k] <= pos {
                    current = (self.example_starts[k] - first as u64) as u32;
                    k += 1;
                }
                *s = current;
            }
        }
        self.has_example_starts()
    }

    /// Fills `inputs` and `targets` (each `batch_size * seq_len`, row-major
    /// `[batch, seq]`) with the next batch. Allocates nothing.
    ///
    /// # Panics
    /// If either buffer does not have exactly `batch_size * seq_len` elements.
    pub fn next_batch(&mut self, inputs: &mut [u32], targets: &mut [u32]) {
        self.fill_batch(inputs, targets);
    }

    /// [`Batcher::next_batch`], recording each window's first token offset.
    fn fill_batch(&mut self, inputs: &mut [u32], targets: &mut [u32]) {
        self.window_firsts.clear();
        let (b, t) = (self.batch_size, self.seq_len);
        assert_eq!(
            inputs.len(),
            b * t,
            "inputs must hold batch_size * seq_len ids"
        );
        assert_eq!(
            targets.len(),
            b * t,
            "targets must hold batch_size * seq_len ids"
        );
        for row in 0..b {
            let start = match self.sampling {
                // Any start with a full window after it: 0..=n - t - 1.
                Sampling::Random => self.rng.below((self.tokens.len() - t) as u64) as usize,
                Sampling::Sequential => self.cursor as usize * t,
            };
            self.window_firsts.push(start);
            let window = &self.tokens[start..start + t + 1];
            inputs[row * t..(row + 1) * t].copy_from_slice(&window[..t]);
            let tg = &mut targets[row * t..(row + 1) * t];
            tg.copy_from_slice(&window[1..]);
            if let Some(mask) = &self.mask {
                for (target, &m) in tg.iter_mut().zip(&mask[start + 1..start + t + 1]) {
                    if m == 0 {
                        *target = MASKED_TARGET;
                    }
                }
            }
            self.cursor += 1;
            if self.cursor == self.windows_per_epoch {
                self.cursor = 0;
                self.epoch += 1;
            }
        }
        self.batches += 1;
    }

    /// The position to save in a checkpoint.
    pub fn state(&self) -> BatcherState {
        BatcherState {
            rng: self.rng,
            cursor: self.cursor,
            epoch: self.epoch,
            batches: self.batches,
            n_tokens: self.tokens.len() as u64,
            batch_size: self.batch_size,
            seq_len: self.seq_len,
            sampling: self.sampling,
        }
    }

    /// Continues from a saved position: the following batches equal those the saving
    /// batcher would have produced next. Refuses ([`DatasetError::StateMismatch`]) a state
    /// saved over data of another length or with another batch shape or sampling mode.
    pub fn restore(&mut self, state: BatcherState) -> Result<()> {
        let mut diffs = Vec::new();
        if state.n_tokens != self.tokens.len() as u64 {
            diffs.push(format!(
                "it was saved over {} tokens, the data now has {}",
                state.n_tokens,
                self.tokens.len()
            ));
        }
        if (state.batch_size, state.seq_len) != (self.batch_size, self.seq_len) {
            diffs.push(format!(
                "it was saved with batch size {} and seq_len {}, now {} and {}",
                state.batch_size, state.seq_len, self.batch_size, self.seq_len
            ));
        }
        if state.sampling != self.sampling {
            diffs.push(format!(
                "it was saved with {:?} sampling, now {:?}",
                state.sampling, self.sampling
            ));
        }
        if diffs.is_empty() && state.cursor >= self.windows_per_epoch {
            diffs.push(format!(
                "its cursor {} is past the {} windows of an epoch",
                state.cursor, self.windows_per_epoch
            ));
        }
        if !diffs.is_empty() {
            return Err(DatasetError::StateMismatch(diffs.join("; ")));
        }
        self.rng = state.rng;
        self.cursor = state.cursor;
        self.epoch = state.epoch;
        self.batches = state.batches;
        Ok(())
    }

    /// Goes back to the first batch with the generator reseeded, e.g. to run the same
    /// validation batches at every evaluation.
    pub fn reset(&mut self, seed: u64) {
        self.rng = Rng::new(seed);
        self.cursor = 0;
        self.epoch = 0;
        self.batches = 0;
    }

    /// The data the batches are cut from.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Sequences per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Tokens per sequence.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// How windows are drawn.
    pub fn sampling(&self) -> Sampling {
        self.sampling
    }

    /// Windows in one pass over the data: `(n_tokens - 1) / seq_len`.
    pub fn windows_per_epoch(&self) -> u64 {
        self.windows_per_epoch
    }

    /// Batches needed to serve every window of an epoch once (the last may straddle into
    /// the next epoch).
    pub fn batches_per_epoch(&self) -> u64 {
        self.windows_per_epoch.div_ceil(self.batch_size as u64)
    }

    /// Completed epochs. In [`Sampling::Random`] mode an "epoch" is `windows_per_epoch`
    /// windows drawn, i.e. as many tokens as one pass, not a guarantee that each was seen.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Epochs as a fraction: `epoch + windows served this epoch / windows_per_epoch`.
    pub fn epoch_progress(&self) -> f64 {
        self.epoch as f64 + self.cursor as f64 / self.windows_per_epoch as f64
    }

    /// Batches served since the start (or since the restored state's start).
    pub fn batches_served(&self) -> u64 {
        self.batches
    }
}

#[cfg(test)]
mod mask_tests {
    use super::*;

    #[test]
    fn masked_positions_become_masked_targets() {
        let tokens: Vec<u32> = (0..10).collect();
        let mask = vec![1, 1, 0, 0, 1, 1, 1, 0, 1, 1];
        let mut b = Batcher::new(tokens, 1, 9, Sampling::Sequential, 0)
            .unwrap()
            .with_mask(mask)
            .unwrap();
        let (mut x, mut y) = (vec![0; 9], vec![0; 9]);
        b.next_batch(&mut x, &mut y);
        let m = MASKED_TARGET;
        assert_eq!(x, (0..9).collect::<Vec<u32>>());
        assert_eq!(y, vec![1, m, m, 4, 5, 6, m, 8, 9]);
        let short = Batcher::new((0..10).collect(), 1, 4, Sampling::Random, 0).unwrap();
        assert!(short.with_mask(vec![1; 3]).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: u32) -> Vec<u32> {
        (0..n).collect()
    }

    fn take(b: &mut Batcher, n: usize) -> Vec<(Vec<u32>, Vec<u32>)> {
        let len = b.batch_size() * b.seq_len();
        (0..n)
            .map(|_| {
                let (mut x, mut y) = (vec![0; len], vec![0; len]);
                b.next_batch(&mut x, &mut y);
                (x, y)
            })
            .collect()
    }

    #[test]
    fn example_starts_are_relative_to_each_window() {
        // Tokens 0..20; examples begin at 0, 3, 9 and 10.
        let mut b = Batcher::new(data(20), 2, 6, Sampling::Sequential, 0)
            .unwrap()
            .with_example_starts(vec![0, 3, 9, 10])
            .unwrap();
        assert!(b.has_example_starts());
        let (mut x, mut y, mut s) = (vec![0; 12], vec![0; 12], vec![7; 12]);
        b.next_batch_with_starts(&mut x, &mut y, &mut s);
        // Window 0 holds tokens 0..6 (examples at 0 and 3); window 1 tokens 6..12, inside
        // the example that began at 3 until 9, then 9, then 10.
        assert_eq!(x, data(12));
        assert_eq!(s, vec![0, 0, 0, 3, 3, 3, 0, 0, 0, 3, 4, 4]);
        // Random windows agree with a direct computation from their first token.
        let mut b = Batcher::new(data(200), 3, 16, Sampling::Random, 5)
            .unwrap()
            .with_example_starts((0..200).step_by(7).collect())
            .unwrap();
        let (mut x, mut y, mut s) = (vec![0; 48], vec![0; 48], vec![0; 48]);
        for _ in 0..10 {
            b.next_batch_with_starts(&mut x, &mut y, &mut s);
            for (xr, sr) in x.chunks(16).zip(s.chunks(16)) {
                let first = xr[0];
                for (r, &st) in sr.iter().enumerate() {
                    let pos = first + r as u32;
                    let want = (pos / 7 * 7).saturating_sub(first);
                    assert_eq!(st, want, "window at {first}, row {r}");
                }
            }
        }
        assert!(
            Batcher::new(data(20), 1, 4, Sampling::Random, 0)
                .unwrap()
                .with_example_starts(vec![0, 5, 5])
                .is_err()
        );
    }

    #[test]
    fn targets_are_inputs_shifted_by_one() {
        for sampling in [Sampling::Random, Sampling::Sequential] {
            let mut b = Batcher::new(data(1000), 4, 16, sampling, 3).unwrap();
            for (x, y) in take(&mut b, 20) {
                for row in 0..4 {
                    let (x, y) = (&x[row * 16..][..16], &y[row * 16..][..16]);
                    for i in 0..16 {
                        assert_eq!(y[i], x[i] + 1);
                    }
                    assert!(*y.last().unwrap() < 1000);
                }
            }
        }
    }

    #[test]
    fn random_is_deterministic_per_seed() {
        let a = take(
            &mut Batcher::new(data(5000), 2, 8, Sampling::Random, 42).unwrap(),
            10,
        );
        let b = take(
            &mut Batcher::new(data(5000), 2, 8, Sampling::Random, 42).unwrap(),
            10,
        );
        let c = take(
            &mut Batcher::new(data(5000), 2, 8, Sampling::Random, 43).unwrap(),
            10,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn random_reaches_both_ends() {
        // n = 10, T = 4: starts 0..=5, so the first and last tokens both appear.
        let mut b = Batcher::new(data(10), 1, 4, Sampling::Random, 1).unwrap();
        let batches = take(&mut b, 200);
        assert!(batches.iter().any(|(x, _)| x[0] == 0));
        assert!(batches.iter().any(|(_, y)| y[3] == 9));
    }

    #[test]
    fn restore_equals_uninterrupted() {
        for sampling in [Sampling::Random, Sampling::Sequential] {
            let mut whole = Batcher::new(data(777), 3, 10, sampling, 9).unwrap();
            let expected = take(&mut whole, 60);

            let mut first = Batcher::new(data(777), 3, 10, sampling, 9).unwrap();
            let mut got = take(&mut first, 25);
            // Through JSON, as a checkpoint stores it.
            let saved = serde_json::to_string(&first.state()).unwrap();
            let state: BatcherState = serde_json::from_str(&saved).unwrap();
            assert_eq!(state, first.state());

            let mut resumed = Batcher::new(data(777), 3, 10, sampling, 12345).unwrap();
            resumed.restore(state).unwrap();
            got.extend(take(&mut resumed, 35));
            assert_eq!(got, expected, "{sampling:?}");
            assert_eq!(resumed.state(), whole.state());
        }
    }

    #[test]
    fn restore_refuses_other_data_or_shapes() {
        let b = Batcher::new(data(100), 2, 8, Sampling::Sequential, 0).unwrap();
        let s = b.state();
        let mut other = Batcher::new(data(101), 2, 8, Sampling::Sequential, 0).unwrap();
        let e = other.restore(s.clone()).unwrap_err();
        assert!(e.to_string().contains("100 tokens"), "{e}");
        let mut other = Batcher::new(data(100), 2, 9, Sampling::Random, 0).unwrap();
        let e = other.restore(s).unwrap_err().to_string();
        assert!(e.contains("seq_len") && e.contains("sampling"), "{e}");
    }

    #[test]
    fn sequential_covers_the_data_in_order_and_counts_epochs() {
        // n = 23, T = 5: windows start at 0, 5, 10, 15 (15 + 6 = 21 <= 23); 20 does not fit.
        let mut b = Batcher::new(data(23), 3, 5, Sampling::Sequential, 0).unwrap();
        assert_eq!(b.windows_per_epoch(), 4);
        assert_eq!(b.batches_per_epoch(), 2);
        let batches = take(&mut b, 3);
        let starts: Vec<u32> = batches
            .iter()
            .flat_map(|(x, _)| x.chunks(5).map(|w| w[0]))
            .collect();
        assert_eq!(starts, [0, 5, 10, 15, 0, 5, 10, 15, 0]);
        // The first pass's inputs are the data in order, every token but the tail.
        let first_pass: Vec<u32> = batches.iter().flat_map(|(x, _)| x.clone()).collect();
        assert_eq!(first_pass[..20], data(20)[..]);
        assert_eq!(b.epoch(), 2);
        assert_eq!(b.batches_served(), 3);
        assert!((b.epoch_progress() - 2.25).abs() < 1e-9);
    }

    #[test]
    fn exactly_one_window() {
        let mut b = Batcher::new(data(9), 2, 8, Sampling::Sequential, 0).unwrap();
        let (x, y) = &take(&mut b, 1)[0];
        assert_eq!(x[..8], data(8)[..]);
        assert_eq!(x[8..], data(8)[..]);
        assert_eq!(y[..8], data(9)[1..]);
        let mut r = Batcher::new(data(9), 1, 8, Sampling::Random, 0).unwrap();
        assert_eq!(take(&mut r, 1)[0].0, data(8));
    }

    #[test]
    fn too_little_data_names_the_numbers() {
        let e = Batcher::new(data(100), 1, 128, Sampling::Random, 0).unwrap_err();
        assert!(matches!(
            e,
            DatasetError::TooFewTokens {
                tokens: 100,
                seq_len: 128,
                needed: 129,
                ..
            }
        ));
        assert!(e.to_string().contains("100 tokens"), "{e}");
        assert!(Batcher::new(data(100), 0, 8, Sampling::Random, 0).is_err());
    }

    #[test]
    fn sampling_parses() {
        assert_eq!("Random".parse::<Sampling>().unwrap(), Sampling::Random);
        assert_eq!(
            "sequential".parse::<Sampling>().unwrap(),
            Sampling::Sequential
        );
        assert!("shuffle".parse::<Sampling>().is_err());
        assert_eq!(
            serde_json::to_string(&Sampling::Random).unwrap(),
            "\"random\""
        );
    }
}
