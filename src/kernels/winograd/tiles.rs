//! The transforms of Winograd's F(2x2, 2x2) on one tile, and their adjoints.
//!
//! In one dimension, with interpolation points 0, 1 and infinity, the two outputs
//! `y0 = d0 g0 + d1 g1` and `y1 = d1 g0 + d2 g1` of a 2-tap correlation over `d0 d1 d2` are
//! `y = A^T [(G g) * (B^T d)]` with three multiplications instead of four:
//!
//! ```text
//! B^T d = (d0 - d1, d1, d2 - d1)     G g = (g0, g0 + g1, g1)     A^T m = (m0 + m1, m1 + m2)
//! ```
//!
//! In two dimensions each transform runs along the columns of a tile, then along its rows, so a
//! 3x3 input tile and a 2x2 kernel meet in 9 products that give a 2x2 output tile. The adjoints
//! (transposes) carry gradients back: `B d` to the input tile, `A y` from the output tile, and
//! `G^T u` to the kernel. `A y` is the same map as `G g` and `G^T u` the same as `A^T m`, since
//! `G = A` for these points. Every coefficient is 0 or ±1, so a transform only adds and
//! subtracts, in a fixed order.

use std::ops::{Add, Sub};

/// Values of one transformed tile: 3x3, indexed `u * 3 + v` (row `u`, column `v`).
pub(super) const POINTS: usize = 9;

/// A value the transforms run on: `f32`, or a vector of `f32` lanes that each hold one tile.
pub(super) trait Lane: Copy + Default + Add<Output = Self> + Sub<Output = Self> {}

impl<T: Copy + Default + Add<Output = T> + Sub<Output = T>> Lane for T {}

/// `B^T d`: the input transform of three values.
#[inline(always)]
fn input<T: Lane>([d0, d1, d2]: [T; 3]) -> [T; 3] {
    [d0 - d1, d1, d2 - d1]
}

/// `B v`: the adjoint of [`input`].
#[inline(always)]
fn input_adjoint<T: Lane>([v0, v1, v2]: [T; 3]) -> [T; 3] {
    [v0, v1 - v0 - v2, v2]
}

/// `G g`: the kernel transform of two taps. It is also `A y`, the adjoint of [`output`].
#[inline(always)]
fn spread<T: Lane>([g0, g1]: [T; 2]) -> [T; 3] {
    [g0, g0 + g1, g1]
}

/// `A^T m`: the output transform of three values. It is also `G^T u`, the adjoint of [`spread`].
#[inline(always)]
fn gather<T: Lane>([m0, m1, m2]: [T; 3]) -> [T; 2] {
    [m0 + m1, m1 + m2]
}

/// Applies `f` along each row of `tile`, then along each column of the result.
#[inline(always)]
fn separable<T: Lane, const I: usize, const O: usize>(
    tile: [[T; I]; I],
    f: impl Fn([T; I]) -> [T; O],
) -> [[T; O]; O] {
    // Plain loops over constant bounds, which the compiler unrolls completely.
    let mut rows = [[T::default(); O]; I];
    for j in 0..I {
        rows[j] = f(tile[j]);
    }
    let mut out = [[T::default(); O]; O];
    for v in 0..O {
        let mut column = [T::default(); I];
        for j in 0..I {
            column[j] = rows[j][v];
        }
        let column = f(column);
        for u in 0..O {
            out[u][v] = column[u];
        }
    }
    out
}

/// `B^T d B`: the 3x3 input tile `d` in the transformed domain.
#[inline(always)]
pub(super) fn input_tile<T: Lane>(d: [[T; 3]; 3]) -> [[T; 3]; 3] {
    separable(d, input)
}

/// `B v B^T`: the adjoint of [`input_tile`], from transformed values back to a 3x3 input tile.
#[inline(always)]
pub(super) fn input_tile_adjoint<T: Lane>(v: [[T; 3]; 3]) -> [[T; 3]; 3] {
    separable(v, input_adjoint)
}

/// `G g G^T`: the 2x2 kernel `g` in the transformed domain. Also `A y A^T`, the adjoint of
/// [`output_tile`], which takes a 2x2 output gradient into the transformed domain.
#[inline(always)]
pub(super) fn spread_tile<T: Lane>(g: [[T; 2]; 2]) -> [[T; 3]; 3] {
    separable(g, spread)
}

/// `A^T m A`: the 2x2 output tile of the transformed products `m`. Also `G^T u G`, the adjoint
/// of [`spread_tile`], which takes a transformed kernel gradient back to the 2x2 kernel.
#[inline(always)]
pub(super) fn output_tile<T: Lane>(m: [[T; 3]; 3]) -> [[T; 2]; 2] {
    separable(m, gather)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 2x2 correlation of a 3x3 tile: `y[i][j] = sum of g[a][b] * d[i + a][j + b]`.
    fn direct(d: [[f32; 3]; 3], g: [[f32; 2]; 2]) -> [[f32; 2]; 2] {
        std::array::from_fn(|i| {
            std::array::from_fn(|j| {
                (0..2)
                    .flat_map(|a| (0..2).map(move |b| (a, b)))
                    .map(|(a, b)| g[a][b] * d[i + a][j + b])
                    .sum()
            })
        })
    }

    fn hadamard(a: [[f32; 3]; 3], b: [[f32; 3]; 3]) -> [[f32; 3]; 3] {
        std::array::from_fn(|u| std::array::from_fn(|v| a[u][v] * b[u][v]))
    }

    fn dot<const N: usize>(a: [[f32; N]; N], b: [[f32; N]; N]) -> f32 {
        a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| x * y).sum()
    }

    // Small integers keep every sum exact, so the identities hold bit for bit.
    fn tile3(seed: i32) -> [[f32; 3]; 3] {
        std::array::from_fn(|i| {
            std::array::from_fn(|j| ((seed * 7 + i as i32 * 5 + j as i32 * 3) % 9 - 4) as f32)
        })
    }

    fn tile2(seed: i32) -> [[f32; 2]; 2] {
        std::array::from_fn(|i| {
            std::array::from_fn(|j| ((seed * 5 + i as i32 * 3 + j as i32) % 7 - 3) as f32)
        })
    }

    #[test]
    fn transforms_compute_the_correlation() {
        for seed in 0..20 {
            let (d, g) = (tile3(seed), tile2(seed + 1));
            let m = hadamard(spread_tile(g), input_tile(d));
            assert_eq!(output_tile(m), direct(d, g), "seed {seed}");
        }
    }

    #[test]
    fn adjoints_satisfy_the_inner_product_identity() {
        for seed in 0..20 {
            let (d, v) = (tile3(seed), tile3(seed + 3));
            assert_eq!(dot(input_tile(d), v), dot(d, input_tile_adjoint(v)), "seed {seed}");
            let (g, u) = (tile2(seed), tile3(seed + 5));
            assert_eq!(dot(spread_tile(g), u), dot(g, output_tile(u)), "seed {seed}");
        }
    }
}
