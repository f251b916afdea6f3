//! Single-threaded f32 GEMM with packed operands and a register-blocked `wide` microkernel.
//!
//! Computes `C[m, n] = alpha * A[m, k] * B[k, n] + beta * C` for strided views of slices, in the
//! scheme of GotoBLAS/BLIS:
//!
//! 1. Columns of B and C are cut into blocks of `nc`, rows of B and columns of A into blocks of
//!    `kc` ([`KC`]), and rows of A and C into blocks of `mc` ([`MC`]).
//! 2. A `kc x nc` block of B is packed into slivers of [`NR`] columns (the layout of [`PackB`])
//!    and an `mc x kc` block of A into slivers of [`MR`] rows, zero-padded at the edges.
//! 3. The microkernel multiplies one A sliver by one B sliver into `MR x NR` accumulators kept in
//!    registers. The result is merged into C or, for [`sgemm_tiles`], handed to a closure. The
//!    last B sliver of a width that is not a multiple of `NR` is multiplied only over the
//!    vectors that contain valid columns, so the zero padding costs no multiply-adds. With
//!    AVX-512 (`NR` = 48, 16 lanes), a 64-wide product then does 64 columns' work, not 96.
//!
//! B is read only through [`PackB`], so a convolution can write im2col patches straight into the
//! packed layout, and [`sgemm_tiles`] hands finished tiles of `alpha * A * B` to the caller, so
//! col2im can scatter-add them without a full product matrix.
//!
//! The microkernel uses `f32x16` from `wide` 1.x when the build enables AVX-512F, and `f32x8`
//! otherwise (emulated on 128-bit registers in a baseline x86-64 build). The summation order
//! depends only on `k` and the block sizes, which are compile-time constants, so a result depends
//! only on the inputs and the build. Every call runs on the calling thread.

mod driver;
mod kernel;
mod pack;
mod prepacked;
mod tiles;

use std::ops::Range;

use super::geometry::MAX_TENSOR_ELEMENTS;
use crate::error::{checked_product, Error, Result};

pub(crate) use driver::scale_c;
pub(crate) use kernel::{prefetch_lines, LANES, V};
pub use kernel::{MR, NR};
pub use prepacked::PackedA;

/// A per-thread scratch buffer stored as vectors, so that its first float starts a vector (64
/// bytes with AVX-512). Used through [`with_aligned_buffer`].
pub(crate) type AlignedBuffer = std::cell::Cell<Vec<V>>;

/// Runs `f` on the first `len` floats of this thread's buffer `slot`, grown with zeros if needed.
///
/// The slice starts on a vector boundary, so the GEMM loads and stores whole cache lines of a
/// packed B or a C kept there. An allocator's 16-byte alignment would split every vector access
/// across two lines, which cost 5-10% of a GEMM's time on an Intel AVX-512 core.
/// Old contents are left in place, and a nested call gets a buffer of its own.
pub(crate) fn with_aligned_buffer<R>(
    slot: &'static std::thread::LocalKey<AlignedBuffer>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    driver::with_buffer(slot, len, |vectors| {
        let floats: &mut [f32] = bytemuck::cast_slice_mut(vectors);
        f(&mut floats[..len])
    })
}

/// Depth of a k-block. Each microtile is merged into C once per k-block, one load and store per
/// `KC` fused multiply-adds, while the `KC x NR` sliver of B that the inner loop reuses should stay
/// near L1 (48 KiB at `NR = 48`). Of 256, 384 and 512, 256 was the fastest on an AMD EPYC (Zen 5)
/// core with 48 KiB of L1 and 1 MiB of L2. On an Intel AVX-512 core with 2 MiB of L2, 128 and 192
/// made no training step faster than 256.
pub const KC: usize = 256;

/// Rows of an A block: the `MC x KC` packed block of A (480 KiB) fills half of a 1 MiB L2.
pub const MC: usize = 480;
const _: () = assert!(MC.is_multiple_of(MR), "A blocks must hold whole slivers");

/// Columns of a B block in [`sgemm`] and [`sgemm_with_packer`]: the `KC x NC` packed panel of B
/// (4 MiB) is meant to stay in L3.
pub const NC: usize = 4096 / NR * NR;

/// Size bound, in bytes, for the buffer of [`sgemm_tiles`] that grows with `min(m, k) * nc`: the
/// tile sums of all `m` rows of a column block when `m <= k`, and otherwise the packed B of all `k`
/// rows. The column block `nc` is the widest multiple of [`NR`] (at least `NR`, at most [`NC`])
/// that keeps this buffer, and the tile sums of one A block, within the bound.
pub const TILE_PANEL_BYTES: usize = 4 << 20;

/// A read-only strided matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
///
/// A transposed view swaps the strides ([`MatRef::t`]); a padded leading dimension is a row
/// stride larger than the number of columns.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A mutable strided matrix view; element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// Returns the number of elements a `rows x cols` view with these strides spans, i.e. one more
/// than its largest index, or 0 for an empty view.
fn span(
    what: &'static str,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
) -> Result<usize> {
    if rows == 0 || cols == 0 {
        return Ok(0);
    }
    let last_row = (rows - 1).checked_mul(row_stride);
    let last_col = (cols - 1).checked_mul(col_stride);
    last_row
        .zip(last_col)
        .and_then(|(r, c)| r.checked_add(c))
        .and_then(|last| last.checked_add(1))
        .ok_or(Error::Overflow { what })
}

/// Checks that a view of `len` elements covers `span` elements.
fn check_span(name: &'static str, len: usize, span: usize, shape: String) -> Result<()> {
    if len >= span {
        Ok(())
    } else {
        Err(Error::invalid(
            name,
            format!("a slice of {len} elements"),
            format!("at least {span} elements for {shape}"),
        ))
    }
}

impl<'a> MatRef<'a> {
    /// Creates a `rows x cols` view of `data` with the given strides.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `data` is shorter than the largest index plus one, and
    /// [`Error::Overflow`] when that index does not fit in `usize`.
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        let needed = span("matrix view", rows, cols, row_stride, col_stride)?;
        let shape = format!("a {rows} x {cols} view with strides ({row_stride}, {col_stride})");
        check_span("matrix data", data.len(), needed, shape)?;
        Ok(MatRef { data, rows, cols, row_stride, col_stride })
    }

    /// Creates a C-contiguous (row-major) `rows x cols` view.
    ///
    /// # Errors
    /// As [`MatRef::new`].
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// Returns the transposed view, a `cols x rows` matrix over the same data.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Distance in elements between consecutive rows.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }

    /// Distance in elements between consecutive columns.
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }

    /// Returns the underlying slice.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Creates a view that the caller has already bounds-checked, without formatting an error
    /// message on the way: the fast path for [`super::gemm`], whose views checked themselves.
    pub(super) fn from_checked(
        data: &'a [f32],
        [rows, cols]: [usize; 2],
        [row_stride, col_stride]: [usize; 2],
    ) -> Self {
        debug_assert!(span("matrix view", rows, cols, row_stride, col_stride)
            .is_ok_and(|needed| needed <= data.len()));
        MatRef { data, rows, cols, row_stride, col_stride }
    }
}

/// Returns whether no two elements of the view share an index, by a sufficient test: one
/// stride is at least the other dimension's extent (row- or column-major with any padding).
fn elements_are_distinct(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    if rows == 1 || cols == 1 {
        return (rows <= 1 || row_stride > 0) && (cols <= 1 || col_stride > 0);
    }
    let row_major = col_stride > 0 && cols.checked_mul(col_stride).is_some_and(|e| row_stride >= e);
    let col_major = row_stride > 0 && rows.checked_mul(row_stride).is_some_and(|e| col_stride >= e);
    row_major || col_major
}

impl<'a> MatMut<'a> {
    /// Creates a mutable `rows x cols` view of `data` with the given strides.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `data` is shorter than the largest index plus one, or when
    /// two elements could share an index: neither `row_stride >= cols * col_stride > 0` nor
    /// `col_stride >= rows * row_stride > 0` is true (a dimension of size 1 needs no stride).
    /// [`Error::Overflow`] when the largest index does not fit in `usize`.
    pub fn new(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        let needed = span("matrix view", rows, cols, row_stride, col_stride)?;
        let shape = format!("a {rows} x {cols} view with strides ({row_stride}, {col_stride})");
        check_span("matrix data", data.len(), needed, shape)?;
        if !elements_are_distinct(rows, cols, row_stride, col_stride) {
            return Err(Error::invalid(
                "output strides",
                format!("({row_stride}, {col_stride}) for a {rows} x {cols} view"),
                "row_stride >= cols * col_stride > 0 or col_stride >= rows * row_stride > 0",
            ));
        }
        Ok(MatMut { data, rows, cols, row_stride, col_stride })
    }

    /// Creates a C-contiguous (row-major) `rows x cols` view.
    ///
    /// # Errors
    /// As [`MatMut::new`].
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// As [`MatRef::from_checked`]. Every index stays inside `data` whatever the strides, because
    /// element accesses are checked; strides under which two elements alias would only give a
    /// wrong result, and [`super::gemm::MatMut::new`] rejects zero strides.
    pub(super) fn from_checked(
        data: &'a mut [f32],
        [rows, cols]: [usize; 2],
        [row_stride, col_stride]: [usize; 2],
    ) -> Self {
        debug_assert!(span("matrix view", rows, cols, row_stride, col_stride)
            .is_ok_and(|needed| needed <= data.len()));
        MatMut { data, rows, cols, row_stride, col_stride }
    }
}

/// Supplies the B operand of a product by packing blocks of it.
///
/// `pack_b(k0, kc, n0, nc, dst)` writes the block `B[k0..k0 + kc, n0..n0 + nc]` into `dst`,
/// whose length is `nc.div_ceil(NR) * NR * kc`, in slivers of [`NR`] columns:
///
/// ```text
/// dst[s * kc * NR + p * NR + j] = B[k0 + p, n0 + s * NR + j]
/// ```
///
/// for sliver `s` in `0..nc.div_ceil(NR)`, `p` in `0..kc` and `j` in `0..NR`. Within a sliver,
/// each row of `NR` values is contiguous and rows follow in order of `p`. Columns past `n0 + nc`
/// in the last sliver should be written as zero, because their values only reach output columns
/// that are discarded. A GEMM requests each block it needs exactly once, with `kc <= KC` and
/// `nc <= NC`, and the blocks of one column block in increasing order of `k0`.
///
/// Implemented by [`MatRef`], by [`PackedB`] and by every closure `Fn(usize, usize, usize,
/// usize, &mut [f32])`.
pub trait PackB {
    /// Writes `B[k0..k0 + kc, n0..n0 + nc]` into `dst` in the sliver layout above.
    fn pack_b(&self, k0: usize, kc: usize, n0: usize, nc: usize, dst: &mut [f32]);

    /// Returns the block `B[k0..k0 + kc, n0..n0 + nc]` already in the sliver layout above, if
    /// this operand stores it that way, so that the GEMM reads it in place instead of calling
    /// [`PackB::pack_b`]. The slice must be `nc.div_ceil(NR) * NR * kc` floats long, as `dst`
    /// would be. A GEMM that gets a slice of any other length packs the block with
    /// [`PackB::pack_b`] instead. The default stores nothing packed.
    fn packed_block(&self, k0: usize, kc: usize, n0: usize, nc: usize) -> Option<&[f32]> {
        let _ = (k0, kc, n0, nc);
        None
    }

    /// Returns `[rows, cols]` of B if this operand stores them, so that a GEMM can reject a B
    /// that does not match A and C. The default returns `None`, and the caller is trusted.
    fn shape(&self) -> Option<[usize; 2]> {
        None
    }
}

/// Checks the shape `b` reports, if any, against `k x n`.
fn check_b_shape(b: &impl PackB, k: usize, n: usize) -> Result<()> {
    match b.shape() {
        Some([rows, _]) if rows != k => {
            Err(Error::invalid("rows of B", rows, format!("{k}, the columns of A")))
        }
        Some([_, cols]) if cols != n => {
            Err(Error::invalid("columns of B", cols, format!("{n}, the columns of C")))
        }
        _ => Ok(()),
    }
}

/// A B operand stored whole in the GEMM's packed layout, so that no block is copied.
///
/// For `B [k, n]`, the rows are cut into blocks of [`KC`] and the columns into slivers of [`NR`]
/// (the last one padded to `n_padded = n.next_multiple_of(NR)`). Element `(row, col)` is at
///
/// ```text
/// (row / KC) * KC * n_padded + (col / NR) * kc * NR + (row % KC) * NR + col % NR
/// ```
///
/// where `kc` is the height of its row block, [`KC`] or less for the last. Each block a GEMM
/// requests is then one contiguous range. As with [`PackB::pack_b`], the padding columns
/// may contain any values, because they only reach output columns that are discarded (writing
/// zeros keeps them finite).
#[derive(Clone, Copy, Debug)]
pub struct PackedB<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
}

impl<'a> PackedB<'a> {
    /// Returns the number of floats a `rows x cols` operand takes in this layout, or `None` if
    /// that does not fit in `usize`.
    pub fn packed_len(rows: usize, cols: usize) -> Option<usize> {
        cols.checked_next_multiple_of(NR)?.checked_mul(rows)
    }

    /// Returns the position of element `(row, col)` of a `rows x cols` operand, for `row < rows`
    /// and `col < cols.next_multiple_of(NR)` (the padding columns included).
    #[inline]
    pub fn offset(rows: usize, cols: usize, row: usize, col: usize) -> usize {
        let kc = KC.min(rows - row / KC * KC);
        (row / KC) * KC * cols.next_multiple_of(NR)
            + (col / NR) * kc * NR
            + (row % KC) * NR
            + col % NR
    }

    /// Views `data` as a packed `rows x cols` operand.
    ///
    /// The microkernel reads `data` in whole vectors. When `data` starts on a 64-byte boundary,
    /// no such load spans two cache lines. A GEMM on an Intel AVX-512 core ran 5-10% faster that
    /// way than with the 16-byte alignment that the system allocator gives a large `Vec<f32>`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `data` is not exactly [`PackedB::packed_len`] floats long,
    /// and [`Error::Overflow`] when that length does not fit in `usize`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        let padded = cols
            .checked_next_multiple_of(NR)
            .ok_or(Error::Overflow { what: "columns of the packed B" })?;
        let expected = checked_product("packed B", &[rows, padded])?;
        if data.len() != expected {
            return Err(Error::invalid(
                "length of the packed B",
                data.len(),
                format!("{expected}, for {rows} x {cols} in slivers of {NR} columns"),
            ));
        }
        Ok(PackedB { data, rows, cols })
    }
}

impl PackB for PackedB<'_> {
    fn pack_b(&self, k0: usize, kc: usize, n0: usize, nc: usize, dst: &mut [f32]) {
        if kc == 0 {
            return;
        }
        for (s, sliver) in dst.chunks_exact_mut(kc * NR).enumerate() {
            for (p, row) in sliver.chunks_exact_mut(NR).enumerate() {
                let first = n0 + s * NR;
                for (j, value) in row.iter_mut().enumerate() {
                    let col = first + j;
                    *value = if col < (n0 + nc).min(self.cols) {
                        self.data[Self::offset(self.rows, self.cols, k0 + p, col)]
                    } else {
                        0.0
                    };
                }
            }
        }
    }

    fn shape(&self) -> Option<[usize; 2]> {
        Some([self.rows, self.cols])
    }

    fn packed_block(&self, k0: usize, kc: usize, n0: usize, nc: usize) -> Option<&[f32]> {
        let whole_block = k0.is_multiple_of(KC) && kc == KC.min(self.rows - k0);
        if !whole_block || !n0.is_multiple_of(NR) || n0 + nc > self.cols {
            return None;
        }
        let start = Self::offset(self.rows, self.cols, k0, n0);
        self.data.get(start..start + nc.next_multiple_of(NR) * kc)
    }
}

impl PackB for MatRef<'_> {
    fn pack_b(&self, k0: usize, kc: usize, n0: usize, nc: usize, dst: &mut [f32]) {
        pack::pack_b_strided(self, k0, kc, n0, nc, dst);
    }

    fn shape(&self) -> Option<[usize; 2]> {
        Some([self.rows, self.cols])
    }
}

impl<F: Fn(usize, usize, usize, usize, &mut [f32])> PackB for F {
    fn pack_b(&self, k0: usize, kc: usize, n0: usize, nc: usize, dst: &mut [f32]) {
        self(k0, kc, n0, nc, dst)
    }
}

/// One finished `rows x cols` tile of `alpha * A * B`, at rows `row..row + rows` and columns
/// `col..col + cols` of the product; `rows <= MR` and `cols <= NR`.
#[derive(Clone, Copy, Debug)]
pub struct Tile<'a> {
    /// First row of the tile in the product.
    pub row: usize,
    /// First column of the tile in the product.
    pub col: usize,
    /// Rows in the tile.
    pub rows: usize,
    /// Columns in the tile.
    pub cols: usize,
    /// `MR x NR` values, row-major; only the first `rows x cols` corner belongs to the product.
    values: &'a [f32],
}

impl<'a> Tile<'a> {
    /// Returns row `i` (`i < rows`) of the tile: its `cols` values.
    pub fn row_values(&self, i: usize) -> &'a [f32] {
        debug_assert!(i < self.rows, "tile row {i} out of {}", self.rows);
        &self.values[i * NR..i * NR + self.cols]
    }

    /// Returns element `(i, j)` of the tile, i.e. `(row + i, col + j)` of the product.
    pub fn get(&self, i: usize, j: usize) -> f32 {
        debug_assert!(i < self.rows && j < self.cols, "tile element ({i}, {j}) out of range");
        self.values[i * NR + j]
    }
}

/// Checks that the `m x k`, `k x n` and `m x n` matrices of a product each have at most
/// [`MAX_TENSOR_ELEMENTS`] elements. A view with a zero stride can claim any number of columns
/// without the memory to back them, and this bound keeps the work of one call finite in practice.
fn check_dimensions(m: usize, k: usize, n: usize) -> Result<()> {
    for (what, rows, cols) in [("A", m, k), ("B", k, n), ("C", m, n)] {
        let elements = checked_product("matrix size", &[rows, cols])?;
        if elements > MAX_TENSOR_ELEMENTS {
            return Err(Error::invalid(
                "matrix size",
                format!("{rows} x {cols} ({what})"),
                format!("at most {MAX_TENSOR_ELEMENTS} elements"),
            ));
        }
    }
    Ok(())
}

/// Computes `C = alpha * A * B + beta * C` for strided views.
///
/// `a` is `m x k`, `b` is `k x n` and `c` is `m x n`. With `beta == 0`, C is overwritten without
/// being read, so NaN in it does not propagate (as in BLAS). With `alpha == 0` or `k == 0`, A and B
/// are not read and C becomes `beta * C`.
///
/// # Errors
/// [`Error::InvalidArgument`] when the dimensions do not match, or when A, B or C has more than
/// [`MAX_TENSOR_ELEMENTS`] elements (possible only through a zero stride), and
/// [`Error::Overflow`] when such a count does not fit in `usize`.
pub fn sgemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: MatMut<'_>) -> Result<()> {
    if b.rows != a.cols {
        return Err(Error::invalid("rows of B", b.rows, format!("{}, the columns of A", a.cols)));
    }
    if b.cols != c.cols {
        return Err(Error::invalid(
            "columns of B",
            b.cols,
            format!("{}, the columns of C", c.cols),
        ));
    }
    sgemm_with_packer(alpha, a, &b, beta, c)
}

/// Computes `C = alpha * A * B + beta * C` with B supplied by a packer.
///
/// As [`sgemm`], with `B` the `k x n` matrix that `b` packs, `k = a.cols()` and `n = c.cols()`.
/// The result is bit-identical to [`sgemm`] on a strided B with the same values.
///
/// # Errors
/// [`Error::InvalidArgument`] when A and C differ in rows, when `b` reports a shape
/// ([`PackB::shape`]) other than `k x n`, or when a matrix is too large, as for [`sgemm`].
pub fn sgemm_with_packer(
    alpha: f32,
    a: MatRef<'_>,
    b: &impl PackB,
    beta: f32,
    mut c: MatMut<'_>,
) -> Result<()> {
    if a.rows != c.rows {
        return Err(Error::invalid("rows of A", a.rows, format!("{}, the rows of C", c.rows)));
    }
    check_b_shape(b, a.cols, c.cols)?;
    check_dimensions(a.rows, a.cols, c.cols)?;
    driver::gemm_into(alpha, &a, b, beta, &mut c);
    Ok(())
}

/// Computes `C = alpha * A[rows, :] * B + beta * C` with A packed in advance and B supplied by
/// a packer.
///
/// As [`sgemm_with_packer`], with A the rows `rows` of the `m x k` matrix `a` packed, and
/// `k = a.cols()`, `n = c.cols()`. The blocks of A are read in place instead of being packed per
/// call, and the result is bit-identical to [`sgemm_with_packer`] on the same rows of the
/// unpacked A.
///
/// # Errors
/// [`Error::InvalidArgument`] when `rows` does not start at a multiple of [`MR`] or does not lie
/// within the rows of `a`, when `rows.len()` differs from the rows of C, when `b` reports a
/// shape ([`PackB::shape`]) other than `k x n`, or when a matrix is too large, as for [`sgemm`].
pub fn sgemm_prepacked(
    alpha: f32,
    a: &PackedA,
    rows: Range<usize>,
    b: &impl PackB,
    beta: f32,
    mut c: MatMut<'_>,
) -> Result<()> {
    let Some(a_rows) = prepacked::PackedRows::new(a, rows.clone()) else {
        return Err(Error::invalid(
            "rows of the packed A",
            format!("{rows:?}"),
            format!("a range within 0..{} starting at a multiple of {MR}", a.rows()),
        ));
    };
    if rows.len() != c.rows {
        return Err(Error::invalid("rows of A", rows.len(), format!("{}, the rows of C", c.rows)));
    }
    check_b_shape(b, a.cols(), c.cols)?;
    check_dimensions(rows.len(), a.cols(), c.cols)?;
    driver::gemm_into(alpha, &a_rows, b, beta, &mut c);
    Ok(())
}

/// Computes `alpha * A * B` tile by tile and hands each finished tile to `tile`.
///
/// `a` is `m x k` and `b` packs the `k x n` matrix B. Every `MR x NR` tile of the `m x n` product
/// (smaller at the right and bottom edges) is passed exactly once, in an unspecified but fixed
/// order; an empty product passes none. The values are bit-identical to those [`sgemm`] writes
/// with `beta == 0`. With `alpha == 0` or `k == 0`, A and B are not read and the tiles are zero.
///
/// # Errors
/// [`Error::InvalidArgument`] when `b` reports a shape ([`PackB::shape`]) other than `a.cols() x
/// n`, or when A, B or the product has more than [`MAX_TENSOR_ELEMENTS`]
/// elements, and [`Error::Overflow`] when such a count does not fit in `usize`.
pub fn sgemm_tiles(
    alpha: f32,
    a: MatRef<'_>,
    b: &impl PackB,
    n: usize,
    mut tile: impl FnMut(&Tile<'_>),
) -> Result<()> {
    check_b_shape(b, a.cols, n)?;
    check_dimensions(a.rows, a.cols, n)?;
    tiles::gemm_tiles(alpha, &a, b, n, &mut tile);
    Ok(())
}
