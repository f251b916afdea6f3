//! Shape arithmetic of 2-D convolutions, checked once.
//!
//! A convolution and its transpose share one lowering. [`ConvGeometry`] describes it from the
//! convolution's side: an *image* `[n, c_in, h, w]` is unfolded into windows, one per position of
//! an `out_h x out_w` *grid*, and a weight `[c_out, c_in * k_h * k_w]` maps each window to the
//! `c_out` channels of that grid position. Conv2d reads the image and writes the grid;
//! ConvTranspose2d reads the grid and writes the image. Every other module takes its sizes from
//! here and never recomputes them.

use crate::error::{checked_product, Error, Result};

/// Hyper-parameters of a 2-D convolution (PyTorch's `Conv2d`), independent of the input size.
///
/// Pairs are `[height, width]`. The weight has PyTorch's layout `[c_out, c_in, k_h, k_w]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Conv2dSpec {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel size `[k_h, k_w]`.
    pub kernel: [usize; 2],
    /// Stride `[stride_h, stride_w]`.
    pub stride: [usize; 2],
    /// Zero padding added on both sides `[pad_h, pad_w]`.
    pub padding: [usize; 2],
    /// Spacing between kernel taps `[dilation_h, dilation_w]`.
    pub dilation: [usize; 2],
}

/// Hyper-parameters of a 2-D transposed convolution (PyTorch's `ConvTranspose2d`).
///
/// Pairs are `[height, width]`. The weight has PyTorch's layout `[c_in, c_out, k_h, k_w]`.
/// The output height is `(h - 1) * stride - 2 * padding + dilation * (k_h - 1) +
/// output_padding + 1`: padding crops the output on both sides, output_padding extends it at the
/// bottom and right only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConvTranspose2dSpec {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel size `[k_h, k_w]`.
    pub kernel: [usize; 2],
    /// Stride `[stride_h, stride_w]`.
    pub stride: [usize; 2],
    /// Rows and columns cropped from both sides of the output `[pad_h, pad_w]`.
    pub padding: [usize; 2],
    /// Rows and columns added at the bottom and right of the output; each must be smaller than
    /// the stride or the dilation of its axis.
    pub output_padding: [usize; 2],
    /// Spacing between kernel taps `[dilation_h, dilation_w]`.
    pub dilation: [usize; 2],
}

/// The checked lowering of one convolution over a batch, seen from the convolution's side.
///
/// Image `[n, c_in, h, w]`, weight `[c_out, c_in, k_h, k_w]` read as the matrix
/// `[c_out, k]` with `k = c_in * k_h * k_w`, grid `[n, c_out, out_h, out_w]`. Grid position
/// `(oy, ox)` and tap `(ky, kx)` read image pixel `(oy * stride_h + ky * dilation_h - pad_h,
/// ox * stride_w + kx * dilation_w - pad_w)`; taps that fall outside the image read zero.
/// Every length below fits in `usize` and `isize`: construction checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Batch size.
    pub n: usize,
    /// Image channels.
    pub c_in: usize,
    /// Image height.
    pub h: usize,
    /// Image width.
    pub w: usize,
    /// Grid channels.
    pub c_out: usize,
    /// Grid height.
    pub out_h: usize,
    /// Grid width.
    pub out_w: usize,
    /// Kernel height.
    pub k_h: usize,
    /// Kernel width.
    pub k_w: usize,
    /// Stride `[stride_h, stride_w]`.
    pub stride: [usize; 2],
    /// Padding `[pad_h, pad_w]`.
    pub pad: [usize; 2],
    /// Dilation `[dilation_h, dilation_w]`.
    pub dilation: [usize; 2],
}

/// The checked geometry of a [`Conv2dSpec`] applied to a batch: input is the image, output the
/// grid of [`ConvGeometry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeometry {
    /// The lowering; `lowering.c_in`, `h`, `w` describe the input, `c_out`, `out_h`, `out_w`
    /// the output.
    pub lowering: ConvGeometry,
}

/// The checked geometry of a [`ConvTranspose2dSpec`] applied to a batch: input is the grid,
/// output the image of [`ConvGeometry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2dGeometry {
    /// The lowering; `lowering.c_out`, `out_h`, `out_w` describe the transposed convolution's
    /// input, `c_in`, `h`, `w` its output.
    pub lowering: ConvGeometry,
}

/// Largest number of elements any tensor of a geometry may have (2^31): a larger output would
/// need more than 8 GiB, beyond what a CPU training run should allocate on a caller's behalf.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 31;

fn check_positive(name: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::invalid(name, value, "at least 1"));
    }
    Ok(())
}

fn check_pair_positive(name: &'static str, pair: [usize; 2]) -> Result<()> {
    if pair[0] == 0 || pair[1] == 0 {
        return Err(Error::invalid(name, format!("{pair:?}"), "both entries at least 1"));
    }
    Ok(())
}

/// `dilation * (k - 1) + 1`, the extent of a dilated kernel along one axis.
fn kernel_extent(k: usize, dilation: usize) -> Result<usize> {
    (k - 1)
        .checked_mul(dilation)
        .and_then(|e| e.checked_add(1))
        .ok_or(Error::Overflow { what: "dilated kernel extent" })
}

impl Conv2dSpec {
    /// A square `kernel x kernel` convolution with stride 1, no padding and no dilation.
    pub fn new(c_in: usize, c_out: usize, kernel: usize) -> Self {
        Conv2dSpec {
            c_in,
            c_out,
            kernel: [kernel, kernel],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
        }
    }

    /// Sets the same stride on both axes.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = [stride, stride];
        self
    }

    /// Sets the same padding on both axes.
    pub fn padding(mut self, padding: usize) -> Self {
        self.padding = [padding, padding];
        self
    }

    /// Sets the same dilation on both axes.
    pub fn dilation(mut self, dilation: usize) -> Self {
        self.dilation = [dilation, dilation];
        self
    }

    /// Number of weight elements, `c_out * c_in * k_h * k_w`.
    ///
    /// # Errors
    /// [`Error::Overflow`] if the product does not fit in `usize`.
    pub fn weight_len(&self) -> Result<usize> {
        checked_product("conv2d weight", &[self.c_out, self.c_in, self.kernel[0], self.kernel[1]])
    }

    /// Checks the spec against an input batch `[n, c_in, h, w]` and returns its geometry.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero size, stride or dilation, or a dilated kernel larger
    /// than the padded input; [`Error::Overflow`] when a size does not fit in `usize`.
    pub fn geometry(&self, n: usize, h: usize, w: usize) -> Result<Conv2dGeometry> {
        check_positive("batch size", n)?;
        check_positive("c_in", self.c_in)?;
        check_positive("c_out", self.c_out)?;
        check_positive("input height", h)?;
        check_positive("input width", w)?;
        check_pair_positive("kernel", self.kernel)?;
        check_pair_positive("stride", self.stride)?;
        check_pair_positive("dilation", self.dilation)?;
        let mut out = [0usize; 2];
        for (axis, size) in [h, w].into_iter().enumerate() {
            let extent = kernel_extent(self.kernel[axis], self.dilation[axis])?;
            let padded = self.padding[axis]
                .checked_mul(2)
                .and_then(|p| p.checked_add(size))
                .ok_or(Error::Overflow { what: "padded input size" })?;
            if extent > padded {
                return Err(Error::invalid(
                    if axis == 0 { "kernel height" } else { "kernel width" },
                    format!("{} (dilated extent {extent})", self.kernel[axis]),
                    format!("a dilated extent at most the padded input size {padded}"),
                ));
            }
            out[axis] = (padded - extent) / self.stride[axis] + 1;
        }
        let lowering = ConvGeometry {
            n,
            c_in: self.c_in,
            h,
            w,
            c_out: self.c_out,
            out_h: out[0],
            out_w: out[1],
            k_h: self.kernel[0],
            k_w: self.kernel[1],
            stride: self.stride,
            pad: self.padding,
            dilation: self.dilation,
        };
        lowering.check_sizes()?;
        Ok(Conv2dGeometry { lowering })
    }
}

impl ConvTranspose2dSpec {
    /// A square `kernel x kernel` transposed convolution with stride 1, no padding, no output
    /// padding and no dilation.
    pub fn new(c_in: usize, c_out: usize, kernel: usize) -> Self {
        ConvTranspose2dSpec {
            c_in,
            c_out,
            kernel: [kernel, kernel],
            stride: [1, 1],
            padding: [0, 0],
            output_padding: [0, 0],
            dilation: [1, 1],
        }
    }

    /// Sets the same stride on both axes.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = [stride, stride];
        self
    }

    /// Sets the same padding on both axes.
    pub fn padding(mut self, padding: usize) -> Self {
        self.padding = [padding, padding];
        self
    }

    /// Sets the same output padding on both axes.
    pub fn output_padding(mut self, output_padding: usize) -> Self {
        self.output_padding = [output_padding, output_padding];
        self
    }

    /// Sets the same dilation on both axes.
    pub fn dilation(mut self, dilation: usize) -> Self {
        self.dilation = [dilation, dilation];
        self
    }

    /// Number of weight elements, `c_in * c_out * k_h * k_w`.
    ///
    /// # Errors
    /// [`Error::Overflow`] if the product does not fit in `usize`.
    pub fn weight_len(&self) -> Result<usize> {
        checked_product(
            "conv_transpose2d weight",
            &[self.c_in, self.c_out, self.kernel[0], self.kernel[1]],
        )
    }

    /// Checks the spec against an input batch `[n, c_in, h, w]` and returns its geometry.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero size, stride or dilation, an output padding not
    /// smaller than both the stride and the dilation of its axis, or padding that crops the whole
    /// output; [`Error::Overflow`] when a size does not fit in `usize`.
    pub fn geometry(&self, n: usize, h: usize, w: usize) -> Result<ConvTranspose2dGeometry> {
        check_positive("batch size", n)?;
        check_positive("c_in", self.c_in)?;
        check_positive("c_out", self.c_out)?;
        check_positive("input height", h)?;
        check_positive("input width", w)?;
        check_pair_positive("kernel", self.kernel)?;
        check_pair_positive("stride", self.stride)?;
        check_pair_positive("dilation", self.dilation)?;
        let mut out = [0usize; 2];
        for (axis, size) in [h, w].into_iter().enumerate() {
            let (stride, dilation) = (self.stride[axis], self.dilation[axis]);
            if self.output_padding[axis] >= stride.max(dilation) {
                return Err(Error::invalid(
                    "output_padding",
                    format!("{:?}", self.output_padding),
                    format!(
                        "each entry smaller than its axis's stride or dilation \
                         (stride {:?}, dilation {:?})",
                        self.stride, self.dilation
                    ),
                ));
            }
            let extent = kernel_extent(self.kernel[axis], dilation)?;
            let full = (size - 1)
                .checked_mul(stride)
                .and_then(|v| v.checked_add(extent))
                .and_then(|v| v.checked_add(self.output_padding[axis]))
                .ok_or(Error::Overflow { what: "transposed convolution output size" })?;
            let crop = self.padding[axis]
                .checked_mul(2)
                .ok_or(Error::Overflow { what: "transposed convolution padding" })?;
            if crop >= full {
                return Err(Error::invalid(
                    "padding",
                    format!("{:?}", self.padding),
                    format!("2 * padding below the uncropped output size {full} on each axis"),
                ));
            }
            out[axis] = full - crop;
        }
        let lowering = ConvGeometry {
            n,
            c_in: self.c_out,
            h: out[0],
            w: out[1],
            c_out: self.c_in,
            out_h: h,
            out_w: w,
            k_h: self.kernel[0],
            k_w: self.kernel[1],
            stride: self.stride,
            pad: self.padding,
            dilation: self.dilation,
        };
        lowering.check_sizes()?;
        Ok(ConvTranspose2dGeometry { lowering })
    }
}

impl ConvGeometry {
    /// Returns whether the kernel covers the whole unpadded image with a 1x1 grid, so that
    /// column `b` of the batch's column matrix is sample `b`, flattened.
    pub(crate) fn covers_whole_image(&self) -> bool {
        let unit_dilation = |axis: usize, k: usize| self.dilation[axis] == 1 || k == 1;
        self.pad == [0, 0]
            && (self.k_h, self.k_w) == (self.h, self.w)
            && (self.out_h, self.out_w) == (1, 1)
            && unit_dilation(0, self.k_h)
            && unit_dilation(1, self.k_w)
    }

    /// Returns whether the kernel is 1x1 with stride 1, no padding and a grid as large as the
    /// image, so that a sample's column matrix is the sample itself, `[c_in, h * w]`.
    pub(crate) fn is_pointwise(&self) -> bool {
        self.pad == [0, 0]
            && (self.k_h, self.k_w) == (1, 1)
            && self.stride == [1, 1]
            // A transposed convolution's output padding can make the image larger than the grid.
            && (self.out_h, self.out_w) == (self.h, self.w)
    }

    /// Rows of the column matrix of one sample, `c_in * k_h * k_w`.
    pub fn k(&self) -> usize {
        self.c_in * self.k_h * self.k_w
    }

    /// Grid positions of one sample, `out_h * out_w`.
    pub fn positions(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Elements of the image `[n, c_in, h, w]`.
    pub fn image_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }

    /// Elements of the grid `[n, c_out, out_h, out_w]`.
    pub fn grid_len(&self) -> usize {
        self.n * self.c_out * self.out_h * self.out_w
    }

    /// Elements of the weight `[c_out, c_in, k_h, k_w]`.
    pub fn weight_len(&self) -> usize {
        self.c_out * self.k()
    }

    /// Checks that every length the kernels compute fits in `usize` and stays within
    /// [`MAX_TENSOR_ELEMENTS`], including one sample's whole column matrix `k * positions`,
    /// so that later arithmetic on these sizes cannot overflow.
    fn check_sizes(&self) -> Result<()> {
        let image = checked_product("image", &[self.n, self.c_in, self.h, self.w])?;
        let grid = checked_product("grid", &[self.n, self.c_out, self.out_h, self.out_w])?;
        let weight = checked_product("weight", &[self.c_out, self.c_in, self.k_h, self.k_w])?;
        checked_product(
            "column matrix",
            &[self.n, self.c_in, self.k_h, self.k_w, self.out_h, self.out_w],
        )?;
        for (what, len) in [("image", image), ("grid", grid), ("weight", weight)] {
            if len > MAX_TENSOR_ELEMENTS {
                return Err(Error::invalid(
                    "tensor size",
                    format!("{len} elements ({what})"),
                    format!("at most {MAX_TENSOR_ELEMENTS} elements"),
                ));
            }
        }
        Ok(())
    }
}

impl Conv2dGeometry {
    /// Output height.
    pub fn out_h(&self) -> usize {
        self.lowering.out_h
    }

    /// Output width.
    pub fn out_w(&self) -> usize {
        self.lowering.out_w
    }

    /// Input shape `[n, c_in, h, w]`.
    pub fn input_shape(&self) -> [usize; 4] {
        let l = &self.lowering;
        [l.n, l.c_in, l.h, l.w]
    }

    /// Output shape `[n, c_out, out_h, out_w]`.
    pub fn output_shape(&self) -> [usize; 4] {
        let l = &self.lowering;
        [l.n, l.c_out, l.out_h, l.out_w]
    }

    /// Weight shape `[c_out, c_in, k_h, k_w]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        let l = &self.lowering;
        [l.c_out, l.c_in, l.k_h, l.k_w]
    }
}

// The transposed convolution's output is the lowering's image, so `out_h` reads `lowering.h`.
#[allow(clippy::misnamed_getters)]
impl ConvTranspose2dGeometry {
    /// Output height.
    pub fn out_h(&self) -> usize {
        self.lowering.h
    }

    /// Output width.
    pub fn out_w(&self) -> usize {
        self.lowering.w
    }

    /// Input shape `[n, c_in, h, w]`.
    pub fn input_shape(&self) -> [usize; 4] {
        let l = &self.lowering;
        [l.n, l.c_out, l.out_h, l.out_w]
    }

    /// Output shape `[n, c_out, out_h, out_w]`.
    pub fn output_shape(&self) -> [usize; 4] {
        let l = &self.lowering;
        [l.n, l.c_in, l.h, l.w]
    }

    /// Weight shape `[c_in, c_out, k_h, k_w]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        let l = &self.lowering;
        [l.c_out, l.c_in, l.k_h, l.k_w]
    }
}
