//! Binary elementwise ops with NumPy broadcasting over up to four axes: a ResNet's residual
//! add, a squeeze-excitation gate ([N, C, 1, 1] times [N, C, H, W]), ConvNeXt's layer scale
//! ([C, 1, 1] times [N, C, H, W]). The backward pass of each operand sums the output gradient
//! over the axes that operand was broadcast along.

/// The ops of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Mul,
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Mul => "mul",
        }
    }
}

/// Shapes right-aligned to rank 4 (leading axes of size 1). Each axis of `a` and `b` is the
/// output's or 1. a: \[a\], b: \[b\], y: \[out\].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BinaryParams {
    pub op: BinaryOp,
    pub a: [usize; 4],
    pub b: [usize; 4],
    pub out: [usize; 4],
}

/// `shape` right-aligned to rank 4, or None above rank 4.
pub fn rank4(shape: &[usize]) -> Option<[usize; 4]> {
    if shape.len() > 4 {
        return None;
    }
    let mut s = [1; 4];
    s[4 - shape.len()..].copy_from_slice(shape);
    Some(s)
}

impl BinaryParams {
    /// NumPy's broadcast of `a` and `b`, or None when they do not broadcast (or exceed rank 4).
    pub fn broadcast(op: BinaryOp, a: &[usize], b: &[usize]) -> Option<(BinaryParams, Vec<usize>)> {
        let (a4, b4) = (rank4(a)?, rank4(b)?);
        let mut out = [1; 4];
        for i in 0..4 {
            out[i] = match (a4[i], b4[i]) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => return None,
            };
        }
        let rank = a.len().max(b.len());
        Some((
            BinaryParams {
                op,
                a: a4,
                b: b4,
                out,
            },
            out[4 - rank..].to_vec(),
        ))
    }

    pub fn len(&self) -> usize {
        self.out.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Both operands have the output's shape.
    pub fn is_same_shape(&self) -> bool {
        self.a == self.out && self.b == self.out
    }
    /// Shape of operand `i` (0 = a, 1 = b).
    pub fn operand(&self, i: usize) -> [usize; 4] {
        if i == 0 {
            self.a
        } else {
            self.b
        }
    }
}

/// Element strides of a rank-4 `shape` read at the output's indices: 0 along broadcast axes.
pub fn broadcast_strides(shape: [usize; 4], out: [usize; 4]) -> [usize; 4] {
    let mut st = [0; 4];
    let mut acc = 1;
    for i in (0..4).rev() {
        st[i] = if shape[i] == 1 && out[i] != 1 { 0 } else { acc };
        acc *= shape[i];
    }
    st
}
