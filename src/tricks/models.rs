//! DCGAN networks restructured for two tricks: a generator with virtual batch normalisation in
//! place of BatchNorm, and a discriminator with a minibatch discrimination layer before its
//! output.
//!
//! Both mirror the layouts of [`DcganConfig`]'s builders layer for layer, and draw their initial
//! parameters from the generator passed in the same order, so the layers they share with the
//! plain networks start from the same values. A test compares the parameter shapes with the
//! plain networks' to keep the copies in step.

use serde::{Deserialize, Serialize};

use super::{MinibatchDiscrimination, VirtualBatchNorm};
use crate::error::{checked_product, Error, Result};
use crate::kernels::{Conv2dSpec, ConvTranspose2dSpec};
use crate::layers::{
    BatchNorm, Conv2d, ConvTranspose2d, Flatten, Init, Layer, LeakyRelu, Linear, Network, Relu,
    Tanh,
};
use crate::models::{DcganConfig, LEAKY_SLOPE};
use crate::rng::Rng;

type Layers = Vec<Box<dyn Layer + Send + Sync>>;

/// Settings of minibatch discrimination. The layer's input width `A` is the flattened output
/// of the discriminator's convolutional trunk, `ndf * image_size / 2` features (`ndf *
/// image_size / 8` channels of 4x4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinibatchDiscriminationOptions {
    /// `B`, the number of outputs appended to the features (default 100).
    pub kernels: usize,
    /// `C`, the length of each kernel's projection (default 5).
    pub kernel_dim: usize,
    /// Whether each output also counts the sample itself, adding 1 (default false).
    pub include_self: bool,
}

impl Default for MinibatchDiscriminationOptions {
    fn default() -> Self {
        MinibatchDiscriminationOptions { kernels: 100, kernel_dim: 5, include_self: false }
    }
}

/// The maximum number of minibatch discrimination kernels `B`, about 40 times the default 100.
pub const MAX_MINIBATCH_KERNELS: usize = 4096;

/// The maximum kernel length `C`, about 200 times the default 5.
pub const MAX_MINIBATCH_KERNEL_DIM: usize = 1024;

/// The maximum `B * C`, about 131 times the default 500. The tensor `T` has
/// `A * B * C` elements, so with `A = 1024` discriminator features (`ndf` 16 at 32x32) it
/// stays within 2^26 elements (256 MiB). [`MinibatchDiscrimination::new`] also rejects a `T`
/// above [`MAX_TENSOR_ELEMENTS`](crate::kernels::MAX_TENSOR_ELEMENTS) for wider models.
pub const MAX_MINIBATCH_WIDTH: usize = 1 << 16;

/// The maximum size of the virtual batch normalisation reference batch. Every generator
/// pass runs the reference batch too, so a step with `m` reference rows costs about
/// `(m + n) / n` times a plain one.
pub const MAX_REFERENCE_SIZE: usize = 4096;

impl MinibatchDiscriminationOptions {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when B is outside `1..=MAX_MINIBATCH_KERNELS`, C outside
    /// `1..=MAX_MINIBATCH_KERNEL_DIM`, or `B * C` above [`MAX_MINIBATCH_WIDTH`].
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_MINIBATCH_KERNELS).contains(&self.kernels) {
            return Err(Error::invalid(
                "minibatch_discrimination.kernels (B)",
                self.kernels,
                format!("1 to {MAX_MINIBATCH_KERNELS}"),
            ));
        }
        if !(1..=MAX_MINIBATCH_KERNEL_DIM).contains(&self.kernel_dim) {
            return Err(Error::invalid(
                "minibatch_discrimination.kernel_dim (C)",
                self.kernel_dim,
                format!("1 to {MAX_MINIBATCH_KERNEL_DIM}"),
            ));
        }
        let width = self.kernels * self.kernel_dim;
        if width > MAX_MINIBATCH_WIDTH {
            return Err(Error::invalid(
                "minibatch_discrimination.kernels (B)",
                self.kernels,
                format!(
                    "at most {} for kernel length C = {}, so that B * C <= {MAX_MINIBATCH_WIDTH}",
                    MAX_MINIBATCH_WIDTH / self.kernel_dim,
                    self.kernel_dim
                ),
            ));
        }
        Ok(())
    }
}

/// Settings of virtual batch normalisation in the generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualBatchNormOptions {
    /// `m`, the number of latent vectors in the reference batch (default 64). Every generator
    /// pass also runs them, so a step costs about `(m + n) / n` times a plain one.
    pub reference_size: usize,
}

impl Default for VirtualBatchNormOptions {
    fn default() -> Self {
        VirtualBatchNormOptions { reference_size: 64 }
    }
}

impl VirtualBatchNormOptions {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a reference size outside `1..=MAX_REFERENCE_SIZE`.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_REFERENCE_SIZE).contains(&self.reference_size) {
            return Err(Error::invalid(
                "virtual_batch_norm.reference_size",
                self.reference_size,
                format!("1 to {MAX_REFERENCE_SIZE}"),
            ));
        }
        Ok(())
    }
}

/// Builds the DCGAN generator of `config` with [`VirtualBatchNorm`] in place of every
/// BatchNorm, initialised from `rng` with [`Init::Dcgan`]. Its input is the reference batch's
/// `reference_size` latent vectors followed by the batch's.
///
/// # Errors
/// As [`DcganConfig::validate`]; [`Error::InvalidArgument`] for a zero reference size.
pub fn vbn_generator(
    config: &DcganConfig,
    reference_size: usize,
    rng: &mut Rng,
) -> Result<Network> {
    config.validate()?;
    let mut layers: Layers = Vec::new();
    let stage = |c_in, c_out, stride, padding| -> Result<Layers> {
        let spec = ConvTranspose2dSpec::new(c_in, c_out, 4).stride(stride).padding(padding);
        Ok(vec![
            Box::new(ConvTranspose2d::new(spec, false)?),
            Box::new(VirtualBatchNorm::new(c_out, reference_size)?),
            Box::new(Relu::new()),
        ])
    };
    let mut mult = config.image_size / 8;
    layers.extend(stage(config.nz, config.ngf * mult, 1, 0)?);
    while mult > 1 {
        layers.extend(stage(config.ngf * mult, config.ngf * mult / 2, 2, 1)?);
        mult /= 2;
    }
    let out = ConvTranspose2dSpec::new(config.ngf, config.channels, 4).stride(2).padding(1);
    layers.push(Box::new(ConvTranspose2d::new(out, false)?));
    layers.push(Box::new(Tanh::new()));
    Network::new("main", layers, rng, Init::Dcgan)
}

/// Builds the DCGAN discriminator of `config` restructured for minibatch discrimination: the
/// convolutional trunk (every layer but the final 4x4 convolution), then Flatten,
/// [`MinibatchDiscrimination`] and a linear layer with bias from `A + B` features to one logit.
/// Initialised from `rng` with [`Init::Dcgan`].
///
/// # Errors
/// As [`DcganConfig::validate`] and [`MinibatchDiscriminationOptions::validate`];
/// [`Error::Overflow`] when the feature count does not fit in `usize`.
pub fn minibatch_discriminator(
    config: &DcganConfig,
    options: &MinibatchDiscriminationOptions,
    rng: &mut Rng,
) -> Result<Network> {
    config.validate()?;
    options.validate()?;
    let down = |c_in, c_out| Conv2dSpec::new(c_in, c_out, 4).stride(2).padding(1);
    let mut layers: Layers = vec![
        Box::new(Conv2d::new(down(config.channels, config.ndf), false)?),
        Box::new(LeakyRelu::new(LEAKY_SLOPE)?),
    ];
    let (mut mult, mut size) = (1, config.image_size / 2);
    while size > 4 {
        let (c_in, c_out) = (config.ndf * mult, config.ndf * mult * 2);
        layers.push(Box::new(Conv2d::new(down(c_in, c_out), false)?));
        layers.push(Box::new(BatchNorm::new2d(c_out)?));
        layers.push(Box::new(LeakyRelu::new(LEAKY_SLOPE)?));
        mult *= 2;
        size /= 2;
    }
    let features = checked_product("discriminator features", &[config.ndf, mult, 4, 4])?;
    let (b, c) = (options.kernels, options.kernel_dim);
    layers.push(Box::new(Flatten::new()));
    layers.push(Box::new(MinibatchDiscrimination::new(features, b, c, options.include_self)?));
    let width =
        features.checked_add(b).ok_or(Error::Overflow { what: "discriminator features" })?;
    layers.push(Box::new(Linear::new(width, 1, true)?));
    Network::new("main", layers, rng, Init::Dcgan)
}
