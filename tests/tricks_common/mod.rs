//! Double-precision references for the trick and loss tests, each written from its paper's
//! definition rather than from the code under test: minibatch discrimination, virtual batch
//! normalisation, and every GAN loss term.
#![allow(dead_code)]

#[path = "../layers_common/mod.rs"]
mod layers_common;

pub use layers_common::*;

use dcgan::loss::{Divergence, FGanGenerator, GanLoss};

/// Minibatch discrimination (Salimans et al. 2016, section 3.2) on `x` (`[n, A, 1, 1]`) with
/// `t` the tensor `[A, B, C]`.
pub fn minibatch64(t: &[f64], x: &T64, b: usize, c: usize, include_self: bool) -> T64 {
    let [n, a, _, _] = x.shape;
    assert_eq!(t.len(), a * b * c);
    // M_i = f_i T, [B, C].
    let m: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..b * c)
                .map(|bc| (0..a).map(|k| x.data[i * a + k] * t[k * b * c + bc]).sum())
                .collect()
        })
        .collect();
    let mut data = Vec::with_capacity(n * (a + b));
    for i in 0..n {
        data.extend_from_slice(&x.data[i * a..(i + 1) * a]);
        for kernel in 0..b {
            let mut o = 0.0;
            for j in 0..n {
                if j == i && !include_self {
                    continue;
                }
                let l1: f64 =
                    (0..c).map(|r| (m[i][kernel * c + r] - m[j][kernel * c + r]).abs()).sum();
                o += (-l1).exp();
            }
            data.push(o);
        }
    }
    T64 { shape: [n, a + b, 1, 1], data }
}

/// Virtual batch normalisation (Salimans et al. 2016, section 3.4) of `x` (`[m + n, c, h, w]`,
/// the first `m` rows the reference batch) with `p` = gamma then beta. The reference rows use
/// the reference batch's statistics; example `x_i` uses the weighted moments
/// `E[x] = (sum over reference samples of their mean + mean of x_i) / (m + 1)` and likewise
/// `E[x^2]`, with variance `E[x^2] - E[x]^2`.
pub fn vbn64(p: &[f64], x: &T64, m: usize, eps: f64) -> T64 {
    let [rows, c, h, w] = x.shape;
    let plane = h * w;
    let mean_of = |row: usize, ch: usize, power: i32| -> f64 {
        let start = (row * c + ch) * plane;
        x.data[start..start + plane].iter().map(|v| v.powi(power)).sum::<f64>() / plane as f64
    };
    let mut data = x.data.clone();
    for ch in 0..c {
        let ref_mean: f64 = (0..m).map(|r| mean_of(r, ch, 1)).sum::<f64>();
        let ref_sq: f64 = (0..m).map(|r| mean_of(r, ch, 2)).sum::<f64>();
        for row in 0..rows {
            let (mean, sq) = if row < m {
                (ref_mean / m as f64, ref_sq / m as f64)
            } else {
                let k = m as f64 + 1.0;
                ((ref_mean + mean_of(row, ch, 1)) / k, (ref_sq + mean_of(row, ch, 2)) / k)
            };
            let var = sq - mean * mean;
            let start = (row * c + ch) * plane;
            for v in &mut data[start..start + plane] {
                *v = p[ch] * (*v - mean) / (var + eps).sqrt() + p[c + ch];
            }
        }
    }
    T64 { shape: x.shape, data }
}

/// A layer of a reference network: a standard layer or one of the tricks' layers.
#[derive(Clone, Debug)]
pub enum Ref {
    Std(RefLayer),
    Minibatch { a: usize, b: usize, c: usize, include_self: bool },
    Vbn { features: usize, m: usize },
}

impl Ref {
    pub fn num_params(&self) -> usize {
        match self {
            Ref::Std(l) => l.num_params(),
            Ref::Minibatch { a, b, c, .. } => a * b * c,
            Ref::Vbn { features, .. } => 2 * features,
        }
    }

    pub fn forward(&self, p: &[f64], x: &T64) -> T64 {
        match self {
            Ref::Std(l) => l.forward(p, x),
            Ref::Minibatch { b, c, include_self, .. } => minibatch64(p, x, *b, *c, *include_self),
            Ref::Vbn { m, .. } => vbn64(p, x, *m, 1e-5),
        }
    }
}

/// Runs reference layers, their parameters concatenated in order in `p`.
pub fn run(layers: &[Ref], p: &[f64], x: &T64) -> T64 {
    let mut offset = 0;
    let mut x = x.clone();
    for layer in layers {
        let len = layer.num_params();
        x = layer.forward(&p[offset..offset + len], &x);
        offset += len;
    }
    assert_eq!(offset, p.len(), "parameter count");
    x
}

/// Wraps standard reference layers.
pub fn std_layers(layers: Vec<RefLayer>) -> Vec<Ref> {
    layers.into_iter().map(Ref::Std).collect()
}

/// Which term of a GAN loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Term {
    Real,
    Fake,
    Generator,
}

fn mean(v: &[f64], f: impl Fn(f64) -> f64) -> f64 {
    v.iter().map(|&x| f(x)).sum::<f64>() / v.len() as f64
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// `g_f` of Nowozin et al. 2016, table 2.
fn activation(d: Divergence, v: f64) -> f64 {
    match d {
        Divergence::KullbackLeibler | Divergence::PearsonChiSquared => v,
        Divergence::ReverseKullbackLeibler => -(-v).exp(),
        Divergence::SquaredHellinger => 1.0 - (-v).exp(),
        Divergence::JensenShannon => 2f64.ln() - (1.0 + (-v).exp()).ln(),
    }
}

/// `f*` of Nowozin et al. 2016, table 2.
fn conjugate(d: Divergence, t: f64) -> f64 {
    match d {
        Divergence::KullbackLeibler => (t - 1.0).exp(),
        Divergence::ReverseKullbackLeibler => -1.0 - (-t).ln(),
        Divergence::PearsonChiSquared => 0.25 * t * t + t,
        Divergence::SquaredHellinger => t / (1.0 - t),
        Divergence::JensenShannon => -(2.0 - t.exp()).ln(),
    }
}

/// The value of a loss term at moderate logits, from each paper's formula.
pub fn loss64(loss: GanLoss, term: Term, v: &[f64]) -> f64 {
    match (loss, term) {
        (GanLoss::Bce { real_label }, Term::Real) => {
            let t = real_label as f64;
            mean(v, |x| -(t * sigmoid(x).ln() + (1.0 - t) * (1.0 - sigmoid(x)).ln()))
        }
        (GanLoss::Minimax | GanLoss::NonSaturating, Term::Real) => mean(v, |x| -sigmoid(x).ln()),
        (GanLoss::Bce { .. } | GanLoss::Minimax | GanLoss::NonSaturating, Term::Fake) => {
            mean(v, |x| -(1.0 - sigmoid(x)).ln())
        }
        (GanLoss::Minimax, Term::Generator) => mean(v, |x| (1.0 - sigmoid(x)).ln()),
        (GanLoss::Bce { .. } | GanLoss::NonSaturating, Term::Generator) => {
            mean(v, |x| -sigmoid(x).ln())
        }
        (GanLoss::LeastSquares { fake_target, real_target, generator_target }, term) => {
            let target = match term {
                Term::Real => real_target,
                Term::Fake => fake_target,
                Term::Generator => generator_target,
            } as f64;
            mean(v, |x| 0.5 * (x - target).powi(2))
        }
        (GanLoss::Wasserstein, Term::Real) => -mean(v, |x| x),
        (GanLoss::Wasserstein, Term::Fake) => mean(v, |x| x),
        (GanLoss::Hinge, Term::Real) => mean(v, |x| (1.0 - x).max(0.0)),
        (GanLoss::Hinge, Term::Fake) => mean(v, |x| (1.0 + x).max(0.0)),
        (GanLoss::Wasserstein | GanLoss::Hinge, Term::Generator) => -mean(v, |x| x),
        (GanLoss::FGan { divergence, .. }, Term::Real) => -mean(v, |x| activation(divergence, x)),
        (GanLoss::FGan { divergence, .. }, Term::Fake) => {
            mean(v, |x| conjugate(divergence, activation(divergence, x)))
        }
        (GanLoss::FGan { divergence, generator }, Term::Generator) => match generator {
            FGanGenerator::Alternative => -mean(v, |x| activation(divergence, x)),
            FGanGenerator::Saturating => {
                -mean(v, |x| conjugate(divergence, activation(divergence, x)))
            }
        },
    }
}

/// Every loss the crate offers, f-GANs with both generator losses.
pub fn all_losses() -> Vec<GanLoss> {
    let mut losses = vec![
        GanLoss::Bce { real_label: 0.9 },
        GanLoss::Minimax,
        GanLoss::NonSaturating,
        GanLoss::least_squares(),
        GanLoss::LeastSquares { fake_target: -1.0, real_target: 1.0, generator_target: 0.0 },
        GanLoss::Wasserstein,
        GanLoss::Hinge,
    ];
    for divergence in Divergence::ALL {
        for generator in [FGanGenerator::Alternative, FGanGenerator::Saturating] {
            losses.push(GanLoss::FGan { divergence, generator });
        }
    }
    losses
}
