//! A bounds-checked front end to the single-precision GEMM the convolution lowering runs on.
//!
//! Matrices are views into slices with arbitrary non-negative row and column strides, so a
//! transpose or a sub-block of a larger matrix costs nothing. [`gemm`] runs on one of two
//! backends, chosen process-wide by [`set_gemm_backend`]. The first is the crate's own
//! [`packed_gemm::sgemm`]; under it the convolution products also fuse im2col into its packing
//! and col2im into its tiles. The second is `matrixmultiply::sgemm`, kept as the reference path
//! and roofline. The packed backend is the default when the build targets AVX2 and FMA or
//! AVX-512 (as this repository's `.cargo/config.toml` does), and matrixmultiply otherwise,
//! because matrixmultiply picks its SIMD kernel at run time while `wide` is fixed at compile
//! time. Both run each call on the calling thread (this crate builds matrixmultiply without its
//! `threading` feature), and parallelism comes from running independent calls on rayon's
//! workers.
//!
//! The views here differ from [`packed_gemm`]'s: their constructors panic
//! instead of returning `Result`, because the lowering builds them from shapes it has already
//! validated, and they add [`MatRef::transpose_into`] and [`MatMut::reborrow`]. [`gemm`] turns
//! them into `packed_gemm` views without checking them again.

use std::sync::atomic::{AtomicU8, Ordering};

use super::packed_gemm;

/// The GEMM implementation behind [`gemm`].
///
/// Each backend is deterministic on its own: a result depends only on the inputs, the build and
/// the CPU features. Nothing makes the two agree bit for bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GemmBackend {
    /// [`packed_gemm::sgemm`]: an 8 x 48 microkernel on `wide`'s `f32x16` with AVX-512 (6 x 16
    /// on `f32x8` otherwise). Under it the convolution products run fused paths: im2col packed
    /// straight into the GEMM's panels, and the weight packed once per call.
    Packed,
    /// `matrixmultiply::sgemm` behind the tiled im2col/col2im lowering: the reference path.
    MatrixMultiply,
}

impl Default for GemmBackend {
    /// Returns [`GemmBackend::Packed`] when the build enables AVX-512, or AVX2 and FMA, and
    /// otherwise [`GemmBackend::MatrixMultiply`], whose kernel selects its SIMD at run time.
    fn default() -> Self {
        DEFAULT_BACKEND
    }
}

/// The backend a process starts with (see [`GemmBackend::default`]).
const DEFAULT_BACKEND: GemmBackend = if cfg!(any(
    target_feature = "avx512f",
    all(target_feature = "avx2", target_feature = "fma")
)) {
    GemmBackend::Packed
} else {
    GemmBackend::MatrixMultiply
};

/// The backend of [`gemm`], as the discriminant of [`GemmBackend`].
static BACKEND: AtomicU8 = AtomicU8::new(DEFAULT_BACKEND as u8);

/// Selects the backend of every later [`gemm`] call in this process, on every thread.
///
/// Meant for benchmarks and tests that compare the backends: switching while convolutions run
/// on other threads lets one call mix the two, and the result then depends on timing.
pub fn set_gemm_backend(backend: GemmBackend) {
    BACKEND.store(backend as u8, Ordering::Relaxed);
}

/// Returns the backend [`gemm`] currently uses: [`GemmBackend::default`] unless
/// [`set_gemm_backend`] chose another.
pub fn gemm_backend() -> GemmBackend {
    if BACKEND.load(Ordering::Relaxed) == GemmBackend::Packed as u8 {
        GemmBackend::Packed
    } else {
        GemmBackend::MatrixMultiply
    }
}

/// A read-only `rows x cols` matrix: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A mutable `rows x cols` matrix: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// Offset of the last element of a `rows x cols` view, or `None` when the view is empty or the
/// offset overflows.
fn last_offset(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return None;
    }
    (rows - 1).checked_mul(row_stride)?.checked_add((cols - 1).checked_mul(col_stride)?)
}

/// Panics unless every element of the view lies inside a slice of `len` elements.
fn assert_in_bounds(view: &str, len: usize, shape: [usize; 2], strides: [usize; 2]) {
    if let Some(last) = last_offset(shape[0], shape[1], strides[0], strides[1]) {
        assert!(
            last < len,
            "{view}: a {}x{} view with strides {strides:?} reaches element {last} of a slice \
             of {len}",
            shape[0],
            shape[1],
        );
    } else {
        let empty = shape[0] == 0 || shape[1] == 0;
        assert!(empty, "{view}: offset of a {shape:?} view with strides {strides:?} overflows");
    }
}

impl<'a> MatRef<'a> {
    /// Views `data` as a `rows x cols` matrix with the given strides.
    ///
    /// # Panics
    /// If an element of the view lies outside `data`.
    pub fn new(
        data: &'a [f32],
        [rows, cols]: [usize; 2],
        [row_stride, col_stride]: [usize; 2],
    ) -> Self {
        assert_in_bounds("MatRef", data.len(), [rows, cols], [row_stride, col_stride]);
        MatRef { data, rows, cols, row_stride, col_stride }
    }

    /// Views the first `rows * cols` elements of `data` as a C-contiguous `rows x cols` matrix.
    ///
    /// # Panics
    /// If `data` is shorter than `rows * cols`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, [rows, cols], [cols, 1])
    }

    /// Returns the transpose, `cols x rows`, over the same elements.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Writes the transpose, `cols x rows`, to `dst` in row-major order.
    ///
    /// # Panics
    /// If `dst` is shorter than `rows * cols`.
    pub fn transpose_into(&self, dst: &mut [f32]) {
        if self.col_stride == 1 {
            let src = (self.data, self.row_stride);
            super::elementwise::transpose(src, [self.rows, self.cols], (dst, self.rows));
        } else {
            for i in 0..self.rows {
                for j in 0..self.cols {
                    dst[j * self.rows + i] = self.data[i * self.row_stride + j * self.col_stride];
                }
            }
        }
    }
}

impl<'a> MatMut<'a> {
    /// Views `data` as a `rows x cols` matrix with the given strides.
    ///
    /// # Panics
    /// If an element of the view lies outside `data`, or if the strides make two elements share
    /// one address (a zero stride with more than one row or column).
    pub fn new(
        data: &'a mut [f32],
        [rows, cols]: [usize; 2],
        [row_stride, col_stride]: [usize; 2],
    ) -> Self {
        assert_in_bounds("MatMut", data.len(), [rows, cols], [row_stride, col_stride]);
        assert!(
            (rows <= 1 || row_stride != 0) && (cols <= 1 || col_stride != 0),
            "MatMut: zero stride in {strides:?} makes elements of a {rows}x{cols} view alias",
            strides = [row_stride, col_stride],
        );
        MatMut { data, rows, cols, row_stride, col_stride }
    }

    /// Views the first `rows * cols` elements of `data` as a C-contiguous `rows x cols` matrix.
    ///
    /// # Panics
    /// If `data` is shorter than `rows * cols`.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, [rows, cols], [cols, 1])
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Reborrows the view for a shorter time, so that it can be passed to [`gemm`] again.
    pub fn reborrow(&mut self) -> MatMut<'_> {
        MatMut {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }
}

/// Computes `C = alpha * A * B + beta * C` in single precision on the [`gemm_backend`].
///
/// `A` is `m x k`, `B` is `k x n` and `C` is `m x n`, each with its own row and column strides.
/// When `beta == 0` the old contents of `C` are never read, so `C` may hold NaN or garbage.
/// When `alpha == 0` or `k == 0`, `A` and `B` are not read either (as in BLAS), and both backends
/// set `C = beta * C`, so NaN or infinity in `A` or `B` does not reach `C`.
/// Each element of the result is a fixed function of its row of `A`, its column of `B`, its old
/// value, `alpha`, `beta`, the backend and the build. Both backends sum `k` in order, in blocks of
/// a constant size, and compute edge tiles the same way as full ones. So the result does not
/// depend on `m`, `n` or the element's position, and splitting a product into blocks of rows or
/// columns gives the same bits; the lowering relies on this for results that do not depend on the
/// thread count.
///
/// # Panics
/// If the shapes do not agree (`A`'s columns differ from `B`'s rows, or `C` is not `m x n`).
/// The views were bounds-checked when they were built.
pub fn gemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: MatMut<'_>) {
    let [m, k] = a.shape();
    let n = b.cols;
    assert!(
        b.rows == k && c.rows == m && c.cols == n,
        "gemm: shapes {:?} x {:?} -> {:?} do not agree",
        a.shape(),
        b.shape(),
        c.shape(),
    );
    if m == 0 || n == 0 {
        return;
    }
    if alpha == 0.0 || k == 0 {
        let strides = [c.row_stride, c.col_stride];
        let mut c = packed_gemm::MatMut::from_checked(c.data, [c.rows, c.cols], strides);
        packed_gemm::scale_c(&mut c, beta);
        return;
    }

    match gemm_backend() {
        GemmBackend::Packed => on_packed(alpha, a, b, beta, c),
        GemmBackend::MatrixMultiply => on_matrixmultiply(alpha, a, b, beta, c),
    }
}

/// [`gemm`] on [`packed_gemm::sgemm`]; shapes are checked by the caller.
fn on_packed(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: MatMut<'_>) {
    let view = |v: &MatRef<'_>| [v.row_stride, v.col_stride];
    let a_view = packed_gemm::MatRef::from_checked(a.data, a.shape(), view(&a));
    let b_view = packed_gemm::MatRef::from_checked(b.data, b.shape(), view(&b));
    let strides = [c.row_stride, c.col_stride];
    let c_view = packed_gemm::MatMut::from_checked(c.data, [c.rows, c.cols], strides);
    // The shapes agree, and a view built from slices that exist has fewer elements than
    // `MAX_TENSOR_ELEMENTS` unless a zero stride repeats them; the lowering uses none.
    packed_gemm::sgemm(alpha, a_view, b_view, beta, c_view)
        .unwrap_or_else(|e| panic!("gemm: packed backend rejected checked views: {e}"));
}

/// [`gemm`] on `matrixmultiply::sgemm`; shapes are checked by the caller.
fn on_matrixmultiply(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: MatMut<'_>) {
    let ([m, k], n) = (a.shape(), b.cols);
    // Every view was checked on construction: each element (i, j) lies inside its slice, and
    // C's strides do not alias. Re-check that in debug builds right before the raw call.
    debug_assert!(last_offset(m, n, c.row_stride, c.col_stride).is_some_and(|o| o < c.data.len()));
    debug_assert!(k == 0 || last_offset(m, k, a.row_stride, a.col_stride) < Some(a.data.len()));
    debug_assert!(k == 0 || last_offset(k, n, b.row_stride, b.col_stride) < Some(b.data.len()));
    let stride = |s: usize| s as isize;
    // SAFETY: the views were bounds-checked when built (`MatRef::new`, `MatMut::new`), so every
    // offset sgemm forms stays inside its slice and fits in isize (a slice is at most isize::MAX
    // bytes). `c` is borrowed mutably and does not overlap `a` or `b`, and C's strides are
    // non-zero wherever there is more than one row or column, so no two elements of C alias.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            stride(a.row_stride),
            stride(a.col_stride),
            b.data.as_ptr(),
            stride(b.row_stride),
            stride(b.col_stride),
            beta,
            c.data.as_mut_ptr(),
            stride(c.row_stride),
            stride(c.col_stride),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend entry point, called directly so that tests never touch the process-wide choice.
    type Backend = fn(f32, MatRef<'_>, MatRef<'_>, f32, MatMut<'_>);

    /// Both backends, with their names for failure messages.
    const BACKENDS: [(&str, Backend); 2] =
        [("packed", on_packed), ("matrixmultiply", on_matrixmultiply)];

    /// `C = alpha * A B + beta * C` with plain loops in f64.
    fn naive(a: &[f32], b: &[f32], c: &[f32], [m, k, n]: [usize; 3], ab: [f32; 2]) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|l| a[i * k + l] as f64 * b[l * n + j] as f64).sum();
                out[i * n + j] = (ab[0] as f64 * dot + ab[1] as f64 * c[i * n + j] as f64) as f32;
            }
        }
        out
    }

    #[test]
    fn gemm_matches_naive_integers() {
        let [m, k, n] = [5, 7, 3];
        let a: Vec<f32> = (0..m * k).map(|i| (i % 5) as f32 - 2.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 3) as f32 - 1.0).collect();
        let c0: Vec<f32> = (0..m * n).map(|i| i as f32).collect();
        for (name, backend) in BACKENDS {
            let mut c = c0.clone();
            backend(
                2.0,
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&b, k, n),
                1.0,
                MatMut::row_major(&mut c, m, n),
            );
            assert_eq!(c, naive(&a, &b, &c0, [m, k, n], [2.0, 1.0]), "{name}");
        }
    }

    #[test]
    fn gemm_beta_zero_ignores_nan() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [1.0, 0.0, 0.0, 1.0];
        for (name, backend) in BACKENDS {
            let mut c = [f32::NAN; 4];
            backend(1.0, MatRef::row_major(&a, 2, 2), MatRef::row_major(&b, 2, 2), 0.0, {
                MatMut::row_major(&mut c, 2, 2)
            });
            assert_eq!(c, a, "{name}");
        }
    }

    #[test]
    fn gemm_transposed_and_strided_views() {
        // A^T from a column-major buffer, B as every other column of a wider matrix, C strided.
        let [m, k, n] = [3, 4, 2];
        let a: Vec<f32> = (0..m * k).map(|i| i as f32).collect(); // [m, k] row-major
        let a_t: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect(); // [k, m]
        let wide: Vec<f32> = (0..k * 2 * n).map(|i| (i * 7 % 11) as f32).collect(); // [k, 2n]
        let b: Vec<f32> = (0..k * n).map(|i| wide[(i / n) * 2 * n + 2 * (i % n)]).collect();
        let expected = naive(&a, &b, &vec![0.0; m * n], [m, k, n], [1.0, 0.0]);
        for (name, backend) in BACKENDS {
            let mut c = vec![f32::NAN; m * n * 3];
            backend(
                1.0,
                MatRef::row_major(&a_t, k, m).t(),
                MatRef::new(&wide, [k, n], [2 * n, 2]),
                0.0,
                MatMut::new(&mut c, [m, n], [3 * n, 3]),
            );
            for i in 0..m {
                for j in 0..n {
                    let got = c[i * 3 * n + 3 * j];
                    assert_eq!(got, expected[i * n + j], "{name}: element ({i}, {j})");
                }
            }
            let mut untouched = c.iter().enumerate().filter(|(offset, _)| offset % 3 != 0);
            assert!(untouched.all(|(_, v)| v.is_nan()), "{name}: a write landed outside the view");
        }
    }

    #[test]
    fn gemm_k_zero_scales_c() {
        for (name, backend) in BACKENDS {
            let mut c = [1.0, 2.0];
            backend(1.0, MatRef::row_major(&[], 2, 0), MatRef::row_major(&[], 0, 1), 0.5, {
                MatMut::row_major(&mut c, 2, 1)
            });
            assert_eq!(c, [0.5, 1.0], "{name}");
        }
    }

    #[test]
    #[should_panic(expected = "reaches element")]
    fn view_out_of_bounds_panics() {
        MatRef::new(&[0.0; 10], [3, 4], [4, 1]);
    }

    #[test]
    #[should_panic(expected = "do not agree")]
    fn gemm_shape_mismatch_panics() {
        let mut c = [0.0; 4];
        gemm(1.0, MatRef::row_major(&[0.0; 6], 2, 3), MatRef::row_major(&[0.0; 4], 2, 2), 0.0, {
            MatMut::row_major(&mut c, 2, 2)
        });
    }
}
