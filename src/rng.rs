//! Seeded random streams, one per purpose.
//!
//! All randomness of a run derives from one `u64` seed. Each purpose (weight initialisation,
//! latent noise, data order, dropout, instance noise) gets its own xoshiro256++ stream, the seeded
//! generator advanced by a different number of `jump()`s (2^128 steps each), so the streams never
//! overlap and a draw added in one place does not shift another stream.

use ndarray::Array4;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::error::{try_zeros, Error};
use crate::kernels::MAX_TENSOR_ELEMENTS;

/// The purposes that own a random stream. The discriminant is the stream's jump count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Initial weights of both networks.
    Init = 1,
    /// Latent vectors fed to the generator.
    Noise = 2,
    /// Shuffling of the training data.
    Data = 3,
    /// Dropout masks.
    Dropout = 4,
    /// Instance noise added to the discriminator's inputs.
    InstanceNoise = 5,
    /// Anything a trick needs once at the start (reference batches).
    Setup = 6,
    /// The fixed latent batch behind a run's sample grids, and the latent vectors that
    /// `examples/sample.rs` draws.
    Samples = 7,
}

/// A seeded random number generator with the draws the crate needs.
///
/// It serialises as xoshiro's state, `{"inner":{"s":[u64; 4]}}`. Deserialising rejects the
/// all-zero state, the one state that xoshiro never leaves: it would draw only zeros, and
/// [`Rng::below`]'s rejection loop would never end.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RngState")]
pub struct Rng {
    inner: Xoshiro256PlusPlus,
}

/// The serialised form of [`Rng`], checked before it becomes a generator.
#[derive(serde::Deserialize)]
struct RngState {
    inner: XoshiroState,
}

/// The serialised form of [`Xoshiro256PlusPlus`].
#[derive(serde::Deserialize)]
struct XoshiroState {
    s: [u64; 4],
}

impl TryFrom<RngState> for Rng {
    type Error = String;

    fn try_from(state: RngState) -> Result<Self, String> {
        let words = state.inner.s;
        if words == [0; 4] {
            return Err("invalid xoshiro256++ state [0, 0, 0, 0]: expected at least one \
                        non-zero word (the all-zero state draws only zeros)"
                .into());
        }
        // `from_seed` reads the four words little-endian and keeps any non-zero seed as is.
        let mut seed = [0u8; 32];
        for (bytes, word) in seed.chunks_exact_mut(8).zip(words) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
        Ok(Rng { inner: Xoshiro256PlusPlus::from_seed(seed) })
    }
}

impl Rng {
    /// Returns the stream for `purpose` derived from `seed`.
    pub fn stream(seed: u64, purpose: Stream) -> Self {
        let mut inner = Xoshiro256PlusPlus::seed_from_u64(seed);
        for _ in 0..purpose as u32 {
            inner.jump();
        }
        Rng { inner }
    }

    /// Returns a generator seeded directly, for tests and one-off uses.
    pub fn from_seed(seed: u64) -> Self {
        Rng { inner: Xoshiro256PlusPlus::seed_from_u64(seed) }
    }

    /// Returns the next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Draws a uniform `f64` in `[0, 1)` with 53 random bits.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Draws a uniform `f32` in `[0, 1)` with 24 random bits.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Draws a uniform index in `0..bound` (Lemire's multiply-shift with rejection, no modulo bias).
    ///
    /// `bound` must be non-zero.
    pub fn below(&mut self, bound: usize) -> usize {
        debug_assert!(bound > 0);
        let bound = bound as u64;
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = (self.next_u64() as u128) * (bound as u128);
            if (product as u64) >= threshold {
                return (product >> 64) as usize;
            }
        }
    }

    /// Draws a standard normal `f64` by the Box-Muller transform (one of the pair is used, so each
    /// draw consumes exactly two `u64`s and the stream position stays easy to reason about).
    pub fn normal_f64(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform_f64(); // (0, 1], so the logarithm is finite
        let u2 = self.uniform_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Draws a normal `f32` with the given mean and standard deviation.
    pub fn normal(&mut self, mean: f32, std: f32) -> f32 {
        mean + std * self.normal_f64() as f32
    }

    /// Fills `out` with draws from N(mean, std^2).
    pub fn fill_normal(&mut self, out: &mut [f32], mean: f32, std: f32) {
        for v in out {
            *v = self.normal(mean, std);
        }
    }

    /// Returns a tensor of `shape` filled with draws from N(0, 1), in order.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (named `n`, the batch size) when the tensor would have more
    /// than [`MAX_TENSOR_ELEMENTS`] elements; [`Error::OutOfMemory`] when it cannot be
    /// allocated.
    pub fn standard_normal_tensor(&mut self, shape: [usize; 4]) -> crate::Result<Array4<f32>> {
        let len = shape
            .iter()
            .try_fold(1usize, |acc, &dim| acc.checked_mul(dim))
            .filter(|&len| len <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(|| {
                Error::invalid(
                    "n",
                    shape[0],
                    format!(
                        "a batch whose tensor {shape:?} has at most {MAX_TENSOR_ELEMENTS} elements"
                    ),
                )
            })?;
        let mut values = try_zeros("normal tensor", len)?;
        self.fill_normal(&mut values, 0.0, 1.0);
        Ok(Array4::from_shape_vec(shape, values).expect("the length is the shape's product"))
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_and_repeat() {
        let a: Vec<u64> = (0..4).map(|_| Rng::stream(7, Stream::Init).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::stream(7, Stream::Init).next_u64(),
            Rng::stream(7, Stream::Noise).next_u64()
        );
        assert_ne!(
            Rng::stream(7, Stream::Init).next_u64(),
            Rng::stream(8, Stream::Init).next_u64()
        );
    }

    #[test]
    fn normal_moments() {
        let mut rng = Rng::from_seed(1);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.normal_f64()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard errors: 1/sqrt(n) ~ 0.0022 for the mean, sqrt(2/n) ~ 0.0032 for the variance.
        assert!(mean.abs() < 0.011, "mean {mean}");
        assert!((var - 1.0).abs() < 0.016, "variance {var}");
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = Rng::from_seed(3);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let v = rng.below(7);
            seen[v] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut rng = Rng::stream(5, Stream::Data);
        rng.next_u64();
        let saved = serde_json::to_string(&rng).unwrap();
        let mut restored: Rng = serde_json::from_str(&saved).unwrap();
        assert_eq!(restored, rng);
        assert_eq!(rng.next_u64(), restored.next_u64());
    }

    #[test]
    fn state_keeps_the_serialised_words() {
        // Xoshiro256PlusPlus's own serde form is the reference for the words.
        let inner = Xoshiro256PlusPlus::seed_from_u64(11);
        let words = serde_json::to_value(&inner).unwrap();
        let json = serde_json::json!({ "inner": words });
        let restored: Rng = serde_json::from_value(json).unwrap();
        assert_eq!(restored, Rng { inner });
    }

    #[test]
    fn all_zero_state_is_rejected() {
        let err = serde_json::from_str::<Rng>(r#"{"inner":{"s":[0,0,0,0]}}"#).unwrap_err();
        assert!(err.to_string().contains("[0, 0, 0, 0]"), "{err}");
        let mut one_word: Rng = serde_json::from_str(r#"{"inner":{"s":[0,0,1,0]}}"#).unwrap();
        assert!((0..8).any(|_| one_word.next_u64() != 0));
    }
}
