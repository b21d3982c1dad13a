//! EigenCAM's 2-D projection (pytorch-grad-cam's `get_2d_projection`): one image's [C, hw]
//! values as hw samples of C features, NaN → 0, each channel centred, projected onto the first
//! principal component.
//!
//! The sign. An SVD's singular vectors are defined up to sign, so pytorch-grad-cam's maps come
//! out negative for some images, and the ReLU that follows wipes them out (its users' known
//! complaint). We fix it: the projection is flipped when its most negative value is larger in
//! magnitude than its most positive one (|min| > |max|), the rule of Seg-Eigen-CAM (Chung &
//! Ying 2025, Eq. 13, `get_2d_projection_with_sign_correction` in pytorch-grad-cam), so that
//! the strongest response is positive and a map never vanishes for its sign. The comparison
//! with pytorch-grad-cam holds up to this sign.
//!
//! The component comes from the smaller Gram matrix: X Xᵀ (hw × hw: then X v₁ = σ₁ u₁) when
//! there are fewer pixels than channels (ResNet's 7×7 layer4: 49 × 49 instead of
//! 2048 × 2048), else Xᵀ X (C × C). Both in f64.

use faer::{Col, Mat, MatRef, Side};

/// values: [C, hw] → the projection [hw], sign-corrected; None if the eigensolver does not
/// converge (faer reports it; it does not happen in practice).
pub fn projection(values: &[f64], c: usize, hw: usize) -> Option<Vec<f64>> {
    assert_eq!(values.len(), c * hw);
    // X: hw × C, centred per channel.
    let mut x = Mat::from_fn(hw, c, |p, ch| {
        let v = values[ch * hw + p];
        if v.is_nan() {
            0.0
        } else {
            v
        }
    });
    for ch in 0..c {
        let col = x.col_mut(ch);
        let mean = col.as_ref().sum() / hw as f64;
        col.iter_mut().for_each(|v| *v -= mean);
    }
    let mut proj: Vec<f64> = if hw <= c {
        let gram = &x * x.transpose();
        let (lambda, u) = top_eigen(gram.as_ref())?;
        u.iter().map(|&v| v * lambda.max(0.0).sqrt()).collect()
    } else {
        let gram = x.transpose() * &x;
        let (_, v) = top_eigen(gram.as_ref())?;
        (&x * &v).iter().copied().collect()
    };
    let lo = proj.iter().copied().fold(0.0, f64::min);
    let hi = proj.iter().copied().fold(0.0, f64::max);
    if -lo > hi {
        proj.iter_mut().for_each(|v| *v = -*v);
    }
    Some(proj)
}

/// The largest eigenvalue of a symmetric matrix and its unit eigenvector; None if the solver
/// does not converge.
fn top_eigen(m: MatRef<'_, f64>) -> Option<(f64, Col<f64>)> {
    let e = m.self_adjoint_eigen(Side::Lower).ok()?;
    // faer sorts the eigenvalues in nondecreasing order: the largest is the last.
    let last = m.nrows().checked_sub(1)?;
    let lambda = e.S().column_vector()[last];
    Some((lambda, e.U().col(last).to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both Gram matrices give the same projection, whose direction is the data's main axis.
    #[test]
    fn either_gram_matrix_gives_the_principal_axis() {
        // 2 channels, 6 pixels along the direction (1, 2) plus a little noise across it.
        let t = [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5];
        let noise = [0.01, -0.02, 0.015, -0.01, 0.02, -0.015];
        let mut v = vec![0.0; 12];
        for p in 0..6 {
            v[p] = t[p] + 2.0 * noise[p] + 3.0;
            v[6 + p] = 2.0 * t[p] - noise[p] - 1.0;
        }
        let proj = projection(&v, 2, 6).unwrap();
        // Expected: the centred points projected onto ≈ (1, 2)/√5, increasing with t.
        for p in 0..6 {
            assert!((proj[p] - t[p] * 5f64.sqrt()).abs() < 0.05, "{proj:?}");
        }
        // Fewer pixels than channels (the X Xᵀ branch): 2 pixels, 6 channels. Centred, the
        // two rows are ±d with d half their difference, so the projection is ±|d|.
        let wide: Vec<f64> = (0..6)
            .flat_map(|ch| [ch as f64, -(ch as f64) * 0.5])
            .collect();
        let norm = (0..6)
            .map(|ch| (0.75 * ch as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let proj = projection(&wide, 6, 2).unwrap();
        assert_eq!(proj.len(), 2);
        for p in proj {
            assert!((p.abs() - norm).abs() < 1e-9, "{p} vs ±{norm}");
        }
    }

    #[test]
    fn the_sign_makes_the_strongest_response_positive() {
        // One pixel far below the rest: after centring it dominates negatively.
        let v = vec![1.0, 1.0, 1.0, -9.0, 2.0, 2.0, 2.0, -18.0];
        let proj = projection(&v, 2, 4).unwrap();
        let hi = proj.iter().copied().fold(f64::MIN, f64::max);
        let lo = proj.iter().copied().fold(f64::MAX, f64::min);
        assert!(hi >= -lo, "{proj:?}");
        assert!(proj[3] > 0.0);
    }

    #[test]
    fn constant_and_nan_values_give_zeros() {
        let v = vec![3.0, 3.0, f64::NAN, 3.0];
        let proj = projection(&v, 1, 4).unwrap();
        // NaN → 0 is a real value after centring; constant channels alone give 0.
        assert!(proj.iter().all(|x| x.is_finite()));
        assert_eq!(projection(&[2.0; 6], 2, 3), Some(vec![0.0; 3]));
    }
}
