//! The DCGAN generator and discriminator of the official PyTorch example, at any power-of-two
//! image size from 16 to 128.
//!
//! Generator (`nz` latent channels to `channels` image channels), with `m = image_size / 8`:
//!
//! ```text
//! ConvT(nz -> ngf*m, k4 s1 p0) BN ReLU                       1x1 -> 4x4
//! ConvT(ngf*m -> ngf*m/2, k4 s2 p1) BN ReLU   (while m > 1)   doubles the size
//! ConvT(ngf -> channels, k4 s2 p1) Tanh
//! ```
//!
//! Discriminator, mirroring it and ending in one logit per sample (no sigmoid; the loss takes
//! logits):
//!
//! ```text
//! Conv(channels -> ndf, k4 s2 p1) LeakyReLU(0.2)
//! Conv(ndf*m -> ndf*2m, k4 s2 p1) BN LeakyReLU(0.2)   (until the size is 4x4)
//! Conv(ndf*image_size/8 -> 1, k4 s1 p0)
//! ```
//!
//! No convolution has a bias. Every layer takes one index of an `nn.Sequential` named `main`,
//! so parameters are named as in the example's state dicts (`main.0.weight`, `main.1.bias`).

use crate::error::{checked_product, Error, Result};
use crate::kernels::{Conv2dSpec, ConvTranspose2dSpec};
use crate::layers::{
    BatchNorm, Conv2d, ConvTranspose2d, Init, Layer, LeakyRelu, Network, Relu, Tanh,
};
use crate::rng::{Rng, Stream};

/// The negative slope of the discriminator's LeakyReLUs.
pub const LEAKY_SLOPE: f32 = 0.2;

/// The maximum number of parameters of one network of a [`DcganConfig`]: 2^30 `f32` values
/// (4 GiB). [`DcganConfig::validate`] rejects a larger model before anything is allocated. With
/// its gradients and Adam's two moments, a network at the limit takes 16 GiB.
pub const MAX_NETWORK_PARAMETERS: usize = 1 << 30;

/// Bytes that [`DcganConfig::step_memory_bytes`] counts per value of a layer's output: two
/// `f32` values. The peak resident memory of MNIST training runs grew by 4.2-4.9 bytes per
/// output value for each extra sample of a batch (1x32x32 with ngf 64 and ndf 16, 1x64x64 with
/// ngf = ndf = 64, 1x16x16 with ngf = ndf = 32, two steps at two batch sizes each).
pub const STEP_BYTES_PER_ACTIVATION: usize = 8;

/// Sizes of a DCGAN pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DcganConfig {
    /// Latent channels of the generator's input `[n, nz, 1, 1]`.
    pub nz: usize,
    /// Generator width: channels of its last hidden layer.
    pub ngf: usize,
    /// Discriminator width: channels of its first layer.
    pub ndf: usize,
    /// Image channels (1 for MNIST, 3 for colour).
    pub channels: usize,
    /// Image height and width: a power of two from 16 to 128.
    pub image_size: usize,
}

type Layers = Vec<Box<dyn Layer + Send + Sync>>;

impl DcganConfig {
    /// Returns the PyTorch example's 64x64 colour model: nz 100, ngf = ndf = 64.
    pub fn dcgan64() -> Self {
        DcganConfig { nz: 100, ngf: 64, ndf: 64, channels: 3, image_size: 64 }
    }

    /// Returns a 32x32 greyscale model for MNIST: nz 100, ngf = ndf = 64.
    pub fn dcgan32() -> Self {
        DcganConfig { nz: 100, ngf: 64, ndf: 64, channels: 1, image_size: 32 }
    }

    /// Checks the sizes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero size, an image size that is not a power of two
    /// in `16..=128`, or a network with more than [`MAX_NETWORK_PARAMETERS`] parameters;
    /// [`Error::Overflow`] when a channel or parameter count does not fit in `usize`.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in
            [("nz", self.nz), ("ngf", self.ngf), ("ndf", self.ndf), ("channels", self.channels)]
        {
            if value == 0 {
                return Err(Error::invalid(name, value, "at least 1"));
            }
        }
        if !(self.image_size.is_power_of_two() && (16..=128).contains(&self.image_size)) {
            return Err(Error::invalid(
                "image_size",
                self.image_size,
                "a power of two from 16 to 128 (16, 32, 64 or 128)",
            ));
        }
        checked_product("generator channels", &[self.ngf, self.image_size / 8])?;
        checked_product("discriminator channels", &[self.ndf, self.image_size / 8])?;
        let [generator, discriminator] = self.parameter_counts()?;
        let expected = "at most MAX_NETWORK_PARAMETERS = 2^30: lower ngf, ndf or image_size";
        if generator > MAX_NETWORK_PARAMETERS {
            return Err(Error::invalid("generator parameters", generator, expected));
        }
        if discriminator > MAX_NETWORK_PARAMETERS {
            return Err(Error::invalid("discriminator parameters", discriminator, expected));
        }
        Ok(())
    }

    /// Returns the numbers of parameters of the generator and of the discriminator, counted
    /// from the sizes alone, without building either network.
    ///
    /// # Errors
    /// [`Error::Overflow`] when a count does not fit in `usize`.
    pub fn parameter_counts(&self) -> Result<[usize; 2]> {
        let overflow = || Error::Overflow { what: "parameter count" };
        // A 4x4 convolution has `c_in * c_out * 16` weights. BatchNorm adds a scale and a shift
        // per channel.
        let conv =
            |c_in: usize, c_out: usize| checked_product("parameter count", &[c_in, c_out, 16]);
        let with_norm = |c_in: usize, c_out: usize| {
            conv(c_in, c_out)?
                .checked_add(c_out.checked_mul(2).ok_or_else(overflow)?)
                .ok_or_else(overflow)
        };
        let widths = |base: usize, mult: usize| base.checked_mul(mult).ok_or_else(overflow);

        let mut mult = self.image_size / 8;
        let mut generator = with_norm(self.nz, widths(self.ngf, mult)?)?;
        while mult > 1 {
            let c_in = widths(self.ngf, mult)?;
            generator = generator.checked_add(with_norm(c_in, c_in / 2)?).ok_or_else(overflow)?;
            mult /= 2;
        }
        generator = generator.checked_add(conv(self.ngf, self.channels)?).ok_or_else(overflow)?;

        let mut discriminator = conv(self.channels, self.ndf)?;
        let (mut mult, mut size) = (1, self.image_size / 2);
        while size > 4 {
            let c_in = widths(self.ndf, mult)?;
            let c_out = c_in.checked_mul(2).ok_or_else(overflow)?;
            discriminator =
                discriminator.checked_add(with_norm(c_in, c_out)?).ok_or_else(overflow)?;
            mult *= 2;
            size /= 2;
        }
        let last = conv(widths(self.ndf, mult)?, 1)?;
        discriminator = discriminator.checked_add(last).ok_or_else(overflow)?;
        Ok([generator, discriminator])
    }

    /// Returns the number of values that the layers of the generator and of the discriminator
    /// output for a batch of `batch`, each layer's output counted once: the generator on
    /// [`noise_shape`](DcganConfig::noise_shape), the discriminator on
    /// [`image_shape`](DcganConfig::image_shape). Computed from the sizes alone.
    ///
    /// # Errors
    /// As [`validate`](DcganConfig::validate); [`Error::Overflow`] when a count does not fit in
    /// `usize`.
    pub fn activation_counts(&self, batch: usize) -> Result<[usize; 2]> {
        self.validate()?;
        let count = |layers: Layers, input: [usize; 4]| -> Result<usize> {
            let mut shape = input;
            let mut total = 0usize;
            for layer in &layers {
                shape = layer.output_shape(shape)?;
                total = total
                    .checked_add(checked_product("activation count", &shape)?)
                    .ok_or(Error::Overflow { what: "activation count" })?;
            }
            Ok(total)
        };
        Ok([
            count(self.generator_layers()?, self.noise_shape(batch))?,
            count(self.discriminator_layers()?, self.image_shape(batch))?,
        ])
    }

    /// Returns an estimate of the memory, in bytes, that training this pair with Adam takes
    /// at a batch of `batch`, beside the training data:
    /// [`STEP_BYTES_PER_ACTIVATION`] per value of
    /// [`activation_counts`](DcganConfig::activation_counts), and 16 bytes per parameter (the
    /// values, their gradients and Adam's two moments).
    ///
    /// It is meant for refusing a batch far beyond the memory at hand before a step allocates
    /// it, not as an exact figure: tricks such as virtual batch normalisation add to it.
    ///
    /// # Errors
    /// As [`activation_counts`](DcganConfig::activation_counts) and
    /// [`parameter_counts`](DcganConfig::parameter_counts).
    pub fn step_memory_bytes(&self, batch: usize) -> Result<usize> {
        let overflow = || Error::Overflow { what: "step memory" };
        let [g_values, d_values] = self.activation_counts(batch)?;
        let [g_params, d_params] = self.parameter_counts()?;
        let values = g_values.checked_add(d_values).ok_or_else(overflow)?;
        let params = g_params.checked_add(d_params).ok_or_else(overflow)?;
        values
            .checked_mul(STEP_BYTES_PER_ACTIVATION)
            .and_then(|bytes| bytes.checked_add(params.checked_mul(16)?))
            .ok_or_else(overflow)
    }

    /// Builds the generator's layers, with parameters not yet allocated.
    fn generator_layers(&self) -> Result<Layers> {
        let mut layers: Layers = Vec::new();
        let mut mult = self.image_size / 8;
        let stage = |c_in, c_out, stride, padding| -> Result<Layers> {
            let spec = ConvTranspose2dSpec::new(c_in, c_out, 4).stride(stride).padding(padding);
            Ok(vec![
                Box::new(ConvTranspose2d::new(spec, false)?),
                Box::new(BatchNorm::new2d(c_out)?),
                Box::new(Relu::new()),
            ])
        };
        layers.extend(stage(self.nz, self.ngf * mult, 1, 0)?);
        while mult > 1 {
            layers.extend(stage(self.ngf * mult, self.ngf * mult / 2, 2, 1)?);
            mult /= 2;
        }
        let out = ConvTranspose2dSpec::new(self.ngf, self.channels, 4).stride(2).padding(1);
        layers.push(Box::new(ConvTranspose2d::new(out, false)?));
        layers.push(Box::new(Tanh::new()));
        Ok(layers)
    }

    /// Builds the discriminator's layers, with parameters not yet allocated.
    fn discriminator_layers(&self) -> Result<Layers> {
        let down = |c_in, c_out| Conv2dSpec::new(c_in, c_out, 4).stride(2).padding(1);
        let mut layers: Layers = vec![
            Box::new(Conv2d::new(down(self.channels, self.ndf), false)?),
            Box::new(LeakyRelu::new(LEAKY_SLOPE)?),
        ];
        let (mut mult, mut size) = (1, self.image_size / 2);
        while size > 4 {
            let (c_in, c_out) = (self.ndf * mult, self.ndf * mult * 2);
            layers.push(Box::new(Conv2d::new(down(c_in, c_out), false)?));
            layers.push(Box::new(BatchNorm::new2d(c_out)?));
            layers.push(Box::new(LeakyRelu::new(LEAKY_SLOPE)?));
            mult *= 2;
            size /= 2;
        }
        layers.push(Box::new(Conv2d::new(Conv2dSpec::new(self.ndf * mult, 1, 4), false)?));
        Ok(layers)
    }

    /// Builds the generator, initialised from `rng` with [`Init::Dcgan`].
    ///
    /// # Errors
    /// As [`validate`](DcganConfig::validate).
    pub fn generator(&self, rng: &mut Rng) -> Result<Network> {
        self.validate()?;
        Network::new("main", self.generator_layers()?, rng, Init::Dcgan)
    }

    /// Builds the discriminator, initialised from `rng` with [`Init::Dcgan`].
    ///
    /// # Errors
    /// As [`validate`](DcganConfig::validate).
    pub fn discriminator(&self, rng: &mut Rng) -> Result<Network> {
        self.validate()?;
        Network::new("main", self.discriminator_layers()?, rng, Init::Dcgan)
    }

    /// Builds both networks, initialised from `Rng::stream(seed, Stream::Init)`: first the
    /// generator, then the discriminator.
    ///
    /// # Errors
    /// As [`validate`](DcganConfig::validate).
    pub fn build(&self, seed: u64) -> Result<(Network, Network)> {
        let mut rng = Rng::stream(seed, Stream::Init);
        let generator = self.generator(&mut rng)?;
        let discriminator = self.discriminator(&mut rng)?;
        Ok((generator, discriminator))
    }

    /// Returns the generator's input shape for a batch of `n`.
    pub fn noise_shape(&self, n: usize) -> [usize; 4] {
        [n, self.nz, 1, 1]
    }

    /// Returns the image shape for a batch of `n`.
    pub fn image_shape(&self, n: usize) -> [usize; 4] {
        [n, self.channels, self.image_size, self.image_size]
    }
}
