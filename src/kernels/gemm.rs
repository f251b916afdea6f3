//! A safe, bounds-checked front end to `matrixmultiply::sgemm`.
//!
//! Matrices are views into slices with arbitrary non-negative row and column strides, so a
//! transpose or a sub-block of a larger matrix costs nothing. matrixmultiply packs both operands
//! into cache-sized panels and picks its microkernel (AVX-512, AVX2+FMA, ...) at run time. This
//! crate builds it without its `threading` feature, so each call runs on the calling thread, and
//! parallelism comes from running independent calls on rayon's workers.

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

/// Computes `C = alpha * A * B + beta * C` in single precision.
///
/// `A` is `m x k`, `B` is `k x n` and `C` is `m x n`, each with its own row and column strides.
/// When `beta == 0` the old contents of `C` are never read, so `C` may hold NaN or garbage.
/// With `alpha == 1` each element of the result is a fixed function of its row of `A`, its
/// column of `B`, its old value, `beta` and the microkernel matrixmultiply selects for this CPU.
/// matrixmultiply 0.3 sums `k` in order, in chunks of a constant size, and rounds edge tiles the
/// same way as full ones. So the result does not depend on `m`, `n` or the element's position,
/// and splitting a product into blocks of rows or columns gives the same bits.
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
        let mut c = c0.clone();
        gemm(
            2.0,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            1.0,
            MatMut::row_major(&mut c, m, n),
        );
        assert_eq!(c, naive(&a, &b, &c0, [m, k, n], [2.0, 1.0]));
    }

    #[test]
    fn gemm_beta_zero_ignores_nan() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [1.0, 0.0, 0.0, 1.0];
        let mut c = [f32::NAN; 4];
        gemm(1.0, MatRef::row_major(&a, 2, 2), MatRef::row_major(&b, 2, 2), 0.0, {
            MatMut::row_major(&mut c, 2, 2)
        });
        assert_eq!(c, a);
    }

    #[test]
    fn gemm_transposed_and_strided_views() {
        // A^T from a column-major buffer, B as every other column of a wider matrix, C strided.
        let [m, k, n] = [3, 4, 2];
        let a: Vec<f32> = (0..m * k).map(|i| i as f32).collect(); // [m, k] row-major
        let a_t: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect(); // [k, m]
        let wide: Vec<f32> = (0..k * 2 * n).map(|i| (i * 7 % 11) as f32).collect(); // [k, 2n]
        let b: Vec<f32> = (0..k * n).map(|i| wide[(i / n) * 2 * n + 2 * (i % n)]).collect();
        let mut c = vec![f32::NAN; m * n * 3];
        gemm(
            1.0,
            MatRef::row_major(&a_t, k, m).t(),
            MatRef::new(&wide, [k, n], [2 * n, 2]),
            0.0,
            MatMut::new(&mut c, [m, n], [3 * n, 3]),
        );
        let expected = naive(&a, &b, &vec![0.0; m * n], [m, k, n], [1.0, 0.0]);
        for i in 0..m {
            for j in 0..n {
                assert_eq!(c[i * 3 * n + 3 * j], expected[i * n + j], "element ({i}, {j})");
            }
        }
        let mut untouched = c.iter().enumerate().filter(|(offset, _)| offset % 3 != 0);
        assert!(untouched.all(|(_, v)| v.is_nan()), "a write landed outside the view");
    }

    #[test]
    fn gemm_k_zero_scales_c() {
        let mut c = [1.0, 2.0];
        gemm(1.0, MatRef::row_major(&[], 2, 0), MatRef::row_major(&[], 0, 1), 0.5, {
            MatMut::row_major(&mut c, 2, 1)
        });
        assert_eq!(c, [0.5, 1.0]);
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
