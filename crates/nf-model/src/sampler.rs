//! Choosing the next token from logits: greedy, temperature, top-k, top-p, repetition
//! penalty, with a seeded RNG so a seed reproduces a generation exactly.

/// Sampling settings. `temperature == 0` means greedy (argmax), whatever the rest says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; 0 is greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = no limit).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1.0 = no limit).
    pub top_p: f32,
    /// CTRL-style penalty on tokens already in the context: positive logits are divided by
    /// it, negative ones multiplied (1.0 = off), as Hugging Face and llama.cpp do.
    pub repetition_penalty: f32,
    /// Seeds the sampling stream: the same seed, prompt and settings give the same text.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

/// A PCG-XSH-RR 32-bit generator: tiny, well distributed, and stable across platforms and
/// versions (a seed must reproduce a generation forever).
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    const MUL: u64 = 6364136223846793005;
    const INC: u64 = 1442695040888963407;

    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut r = Rng { state: 0 };
        r.next_u32();
        r.state = r.state.wrapping_add(seed);
        r.next_u32();
        r
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(Self::MUL).wrapping_add(Self::INC);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        xorshifted.rotate_right((old >> 59) as u32)
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }
}

/// Picks the next token from logits: repetition penalty, temperature, top-k, top-p.
#[derive(Debug, Clone)]
pub struct Sampler {
    /// Its settings.
    pub config: SamplerConfig,
    rng: Rng,
}

impl Sampler {
    /// A sampler with these settings, its stream at the start.
    pub fn new(config: SamplerConfig) -> Sampler {
        Sampler {
            config,
            rng: Rng::new(config.seed),
        }
    }

    /// Picks the next token. `context` holds the ids seen so far (for the penalty);
    /// `logits` is modified in place.
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> u32 {
        let cfg = self.config;
        if cfg.repetition_penalty != 1.0 {
            let mut seen = vec![false; logits.len()];
            for &t in context {
                if let Some(s) = seen.get_mut(t as usize)
                    && !*s
                {
                    *s = true;
                    let l = &mut logits[t as usize];
                    *l = if *l > 0.0 {
                        *l / cfg.repetition_penalty
                    } else {
                        *l * cfg.repetition_penalty
                    };
                }
            }
        }
        if cfg.temperature <= 0.0 {
            return argmax(logits);
        }
        // Candidates sorted by logit, descending; ties keep the lower id first.
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        let k = if cfg.top_k == 0 {
            cand.len()
        } else {
            cfg.top_k.min(cand.len())
        };
        if k < cand.len() {
            cand.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            cand.truncate(k);
        }
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let max = cand[0].1;
        let mut probs: Vec<f32> = cand
            .iter()
            .map(|&(_, l)| ((l - max) / cfg.temperature).exp())
            .collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if cfg.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= cfg.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let s: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= s);
        }
        let r = self.rng.next_f32();
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if r < acc {
                return cand[i].0;
            }
        }
        cand[probs.len() - 1].0
    }
}

/// Index of the largest logit; the first one on ties (as llama2.c's `argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32, top_k: usize, top_p: f32) -> SamplerConfig {
        SamplerConfig {
            temperature,
            top_k,
            top_p,
            repetition_penalty: 1.0,
            seed: 42,
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(cfg(0.0, 0, 1.0));
        assert_eq!(s.sample(&mut [0.1, 3.0, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(cfg(1.0, 1, 1.0));
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 0.5, 0.4], &[]), 1);
        }
    }

    #[test]
    fn top_p_cuts_the_tail() {
        // Probabilities ~[0.83, 0.11, 0.04, 0.015]; top_p 0.8 keeps only the first.
        let mut s = Sampler::new(cfg(1.0, 0, 0.8));
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [4.0, 2.0, 1.0, 0.0], &[]), 0);
        }
    }

    #[test]
    fn sampling_follows_the_distribution_and_the_seed() {
        let logits = [0.0f32, (3.0f32).ln()]; // p = [0.25, 0.75]
        let mut s = Sampler::new(cfg(1.0, 0, 1.0));
        let n = 20_000;
        let ones = (0..n)
            .filter(|_| s.sample(&mut logits.clone(), &[]) == 1)
            .count();
        let frac = ones as f32 / n as f32;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
        let mut a = Sampler::new(cfg(1.0, 0, 1.0));
        let mut b = Sampler::new(cfg(1.0, 0, 1.0));
        let sa: Vec<u32> = (0..100)
            .map(|_| a.sample(&mut logits.clone(), &[]))
            .collect();
        let sb: Vec<u32> = (0..100)
            .map(|_| b.sample(&mut logits.clone(), &[]))
            .collect();
        assert_eq!(sa, sb);
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let mut s = Sampler::new(SamplerConfig {
            repetition_penalty: 2.0,
            ..cfg(0.0, 0, 1.0)
        });
        // Token 0 (logit 3) is halved to 1.5 < 2; token 2 (negative) gets more negative.
        let mut logits = [3.0, 2.0, -1.0];
        assert_eq!(s.sample(&mut logits, &[0, 0, 2]), 1);
        assert_eq!(logits, [1.5, 2.0, -2.0]);
    }
}
