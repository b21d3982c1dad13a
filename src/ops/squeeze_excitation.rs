//! Squeeze-excitation (torchvision's `SqueezeExcitation`, ops/misc.py): y = x · gate(fc2(act(
//! fc1(mean_hw(x))))), the channel gate of every MobileNetV3, EfficientNet and RegNetY block.
//! The graph holds it as six ops (pool, 1×1 conv, activation, 1×1 conv, gate, multiply); the
//! walker hands them to a backend as one call when nothing else reads the values between them,
//! so a GPU runs the block in two launches instead of four to six.

use super::{ActivationParams, AdaptivePool2dParams, BinaryOp, BinaryParams, Conv2dParams};

/// x, y: [n, c, h, w]; fc1: weight [squeeze, c, 1, 1], bias \[squeeze\]; fc2: weight
/// [c, squeeze, 1, 1], bias \[c\]. `act` acts on the [n, squeeze] hidden values, `gate` on the
/// [n, c] gates (their `len`s say so).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SqueezeExciteParams {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub squeeze: usize,
    pub act: ActivationParams,
    pub gate: ActivationParams,
}

impl SqueezeExciteParams {
    pub fn len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The global average pool to [n, c, 1, 1].
    pub fn pool(&self) -> AdaptivePool2dParams {
        AdaptivePool2dParams {
            n: self.n,
            c: self.c,
            h_in: self.h,
            w_in: self.w,
            h_out: 1,
            w_out: 1,
        }
    }

    /// fc1: [n, c, 1, 1] → [n, squeeze, 1, 1].
    pub fn fc1(&self) -> Conv2dParams {
        Conv2dParams::dense(self.n, self.c, (1, 1), self.squeeze, (1, 1), (1, 1), (0, 0))
    }

    /// fc2: [n, squeeze, 1, 1] → [n, c, 1, 1].
    pub fn fc2(&self) -> Conv2dParams {
        Conv2dParams::dense(self.n, self.squeeze, (1, 1), self.c, (1, 1), (1, 1), (0, 0))
    }

    /// The GPU kernels' channel means run with one block of `threads` per image: how many
    /// threads share each channel (a power of two; 1 once there are `threads` channels).
    pub fn lanes_per_channel(&self, threads: usize) -> usize {
        let mut lanes = 1;
        while self.c * lanes * 2 <= threads {
            lanes *= 2;
        }
        lanes
    }

    /// The gates [n, c, 1, 1] times x [n, c, h, w].
    pub fn scale(&self) -> BinaryParams {
        let (n, c) = (self.n, self.c);
        BinaryParams::broadcast(BinaryOp::Mul, &[n, c, 1, 1], &[n, c, self.h, self.w])
            .expect("[n, c, 1, 1] broadcasts against [n, c, h, w]")
            .0
    }
}
