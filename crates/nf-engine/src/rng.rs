//! The workspace's one generator for test and benchmark data: xorshift64 (shifts 13, 7,
//! 17). Deterministic per seed, fast, and the same stream on every machine; good enough for
//! weights and token ids, not for anything that must be unpredictable. (Sampling and data
//! order have their own generators, whose streams are part of what a seed means to a user.)

/// xorshift64. The state must not be 0 ([`XorShift64::new`] makes sure).
#[derive(Debug, Clone)]
pub struct XorShift64(pub u64);

impl XorShift64 {
    /// A generator whose state is `seed` spread over the bits (never 0).
    pub fn new(seed: u64) -> XorShift64 {
        XorShift64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// A bell-shaped value with mean 0 and standard deviation about 0.02 (the sum of two
    /// uniforms), as GPT-2 and llama2.c initialize weights.
    pub fn weight(&mut self) -> f32 {
        let s = self.next_u64();
        let u =
            (s >> 40) as f32 / (1u64 << 24) as f32 + (s & 0xFF_FFFF) as f32 / (1u64 << 24) as f32;
        (u - 1.0) * 0.049
    }

    /// `n` values uniform in [-1, 1).
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        self.vec_scaled(n, 1.0)
    }

    /// `n` values uniform in ±`scale`.
    pub fn vec_scaled(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_f32() * scale).collect()
    }

    /// `n` norm weights near 1 (1 ± 0.2).
    pub fn norm(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| 1.0 + 0.2 * self.next_f32()).collect()
    }
}
