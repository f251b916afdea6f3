//! Dropout (PyTorch's `nn.Dropout`): in training, each element is zeroed with probability `p`
//! and the survivors are scaled by `1 / (1 - p)`; in evaluation it is the identity.

use ndarray::Array4;

use super::elementwise::zip_in_place;
use super::{check_grad_shape, no_forward_error, shape4, standard, Layer, Mode};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// The multiplier applied to each element (0 or `1 / (1 - p)`), cached for the backward pass;
/// an evaluation pass caches only the shape.
#[derive(Debug)]
enum DropoutCache {
    Train(Array4<f32>),
    Eval([usize; 4]),
}

/// Dropout with its own random stream.
///
/// The mask is drawn element by element in order on one thread, so it does not depend on the
/// thread count. Each dropout layer should get its own stream, for example
/// `Rng::stream(seed, Stream::Dropout)` for one layer, or generators seeded from draws of that
/// stream for several.
#[derive(Debug)]
pub struct Dropout {
    p: f32,
    rng: Rng,
    cache: Option<DropoutCache>,
}

impl Dropout {
    /// Dropout with drop probability `p`, drawing its masks from `rng`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `0 <= p <= 1`.
    pub fn new(p: f32, rng: Rng) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid("dropout probability", p, "a number in [0, 1]"));
        }
        Ok(Dropout { p, rng, cache: None })
    }

    /// Returns the drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }

    /// Returns the random stream, for saving a run's state.
    pub fn rng(&self) -> &Rng {
        &self.rng
    }

    /// Replaces the random stream, for restoring a run's state.
    pub fn set_rng(&mut self, rng: Rng) {
        self.rng = rng;
    }
}

impl Layer for Dropout {
    fn describe(&self) -> String {
        format!("Dropout(p={})", self.p)
    }

    fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        Ok(input)
    }

    fn forward(&mut self, _params: &[f32], x: Array4<f32>, mode: Mode) -> Result<Array4<f32>> {
        let mut x = standard(x);
        let shape = shape4(&x);
        if mode == Mode::Eval {
            self.cache = Some(DropoutCache::Eval(shape));
            return Ok(x);
        }

        // Draw the mask. With p = 1 every element drops, as in PyTorch (no division by zero).
        let scale = if self.p < 1.0 { 1.0 / (1.0 - self.p) } else { 0.0 };
        let mut mask = Array4::<f32>::zeros(shape);
        for m in mask.iter_mut() {
            *m = if self.rng.uniform() < self.p { 0.0 } else { scale };
        }
        zip_in_place(
            x.as_slice_mut().expect("standard layout"),
            mask.as_slice().expect("standard layout"),
            |v, m| v * m,
        );
        self.cache = Some(DropoutCache::Train(mask));
        Ok(x)
    }

    fn backward(
        &mut self,
        _params: &[f32],
        _grads: Option<&mut [f32]>,
        dy: Array4<f32>,
        input_grad: bool,
    ) -> Result<Option<Array4<f32>>> {
        let cache = self.cache.as_ref().ok_or_else(|| no_forward_error("Dropout"))?;
        let shape = match cache {
            DropoutCache::Train(mask) => shape4(mask),
            DropoutCache::Eval(shape) => *shape,
        };
        check_grad_shape(&dy, shape)?;
        if !input_grad {
            return Ok(None);
        }
        let mut dx = standard(dy);
        if let DropoutCache::Train(mask) = cache {
            zip_in_place(
                dx.as_slice_mut().expect("standard layout"),
                mask.as_slice().expect("standard layout"),
                |d, m| d * m,
            );
        }
        Ok(Some(dx))
    }
}
