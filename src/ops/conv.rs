//! 2-D convolution: grouped (depthwise when groups = c_in = c_out), dilated, with zero padding
//! that may differ between the leading and trailing side (`nn.ZeroPad2d` / TF "same" padding
//! folded into the conv).

/// x: [n, c_in, h_in, w_in], weight: [c_out, c_in / groups, k_h, k_w], bias: \[c_out\],
/// y: [n, c_out, h_out, w_out]. Output channel o reads input channels of group
/// o / (c_out / groups).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    pub n: usize,
    pub c_in: usize,
    pub h_in: usize,
    pub w_in: usize,
    pub c_out: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    /// Zero rows above the input.
    pub pad_h: usize,
    /// Zero columns left of the input.
    pub pad_w: usize,
    /// Zero rows below the input (equal to `pad_h` for PyTorch's own `padding=`).
    pub pad_h_end: usize,
    /// Zero columns right of the input.
    pub pad_w_end: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
    pub groups: usize,
}

impl Conv2dParams {
    /// A dense conv (groups 1, dilation 1) with symmetric padding, as VGG and ResNet use; the
    /// `with_*` methods below make any other conv from it.
    #[allow(clippy::too_many_arguments)]
    pub fn dense(
        n: usize,
        c_in: usize,
        (h_in, w_in): (usize, usize),
        c_out: usize,
        (k_h, k_w): (usize, usize),
        (stride_h, stride_w): (usize, usize),
        (pad_h, pad_w): (usize, usize),
    ) -> Self {
        Conv2dParams {
            n,
            c_in,
            h_in,
            w_in,
            c_out,
            k_h,
            k_w,
            stride_h,
            stride_w,
            pad_h,
            pad_w,
            pad_h_end: pad_h,
            pad_w_end: pad_w,
            dilation_h: 1,
            dilation_w: 1,
            groups: 1,
        }
    }

    /// This conv with zero padding `[top, left, bottom, right]`, which may differ per side
    /// (the order of the graph's `Conv2d::pad`).
    pub fn with_padding(self, [top, left, bottom, right]: [usize; 4]) -> Self {
        Conv2dParams {
            pad_h: top,
            pad_w: left,
            pad_h_end: bottom,
            pad_w_end: right,
            ..self
        }
    }

    /// This conv with its kernel taps `(dilation_h, dilation_w)` apart.
    pub fn with_dilation(self, (dilation_h, dilation_w): (usize, usize)) -> Self {
        Conv2dParams {
            dilation_h,
            dilation_w,
            ..self
        }
    }

    /// This conv split into `groups` groups of channels (depthwise when groups = c_in = c_out).
    pub fn with_groups(self, groups: usize) -> Self {
        Conv2dParams { groups, ..self }
    }

    /// Rows and columns the dilated kernel spans.
    pub fn span(&self) -> (usize, usize) {
        (
            self.dilation_h * (self.k_h - 1) + 1,
            self.dilation_w * (self.k_w - 1) + 1,
        )
    }
    /// Whether the padded input holds at least one kernel window.
    pub fn fits(&self) -> bool {
        let (sh, sw) = self.span();
        self.h_in + self.pad_h + self.pad_h_end >= sh
            && self.w_in + self.pad_w + self.pad_w_end >= sw
    }
    pub fn h_out(&self) -> usize {
        (self.h_in + self.pad_h + self.pad_h_end - self.span().0) / self.stride_h + 1
    }
    pub fn w_out(&self) -> usize {
        (self.w_in + self.pad_w + self.pad_w_end - self.span().1) / self.stride_w + 1
    }
    /// Input channels per group.
    pub fn c_in_group(&self) -> usize {
        self.c_in / self.groups
    }
    /// Output channels per group.
    pub fn c_out_group(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of one group's im2col matrix: (c_in / groups) · k_h · k_w.
    pub fn k_len(&self) -> usize {
        self.c_in_group() * self.k_h * self.k_w
    }
    pub fn input_len(&self) -> usize {
        self.n * self.c_in * self.h_in * self.w_in
    }
    pub fn output_len(&self) -> usize {
        self.n * self.c_out * self.h_out() * self.w_out()
    }
    pub fn weight_len(&self) -> usize {
        self.c_out * self.k_len()
    }
    /// Groups 1, dilation 1, the same padding on both sides: the convs the GPU backends'
    /// dense kernels and the CPU's im2col/Winograd paths take.
    pub fn is_dense(&self) -> bool {
        self.groups == 1
            && self.dilation_h == 1
            && self.dilation_w == 1
            && self.pad_h == self.pad_h_end
            && self.pad_w == self.pad_w_end
    }
    /// One input and one output channel per group.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.c_in && self.groups == self.c_out
    }
    /// True when the convolution is a plain matrix product over channels.
    pub fn is_pointwise(&self) -> bool {
        self.is_dense()
            && self.k_h == 1
            && self.k_w == 1
            && self.stride_h == 1
            && self.stride_w == 1
            && self.pad_h == 0
            && self.pad_w == 0
    }
    /// The tiling of the GPU backends' tiled grouped-conv kernel (`grouped_conv_fwd_v2`), or
    /// None when one tile's input window does not fit its workgroup memory (v1 runs then).
    pub fn grouped_tile(&self) -> Option<GroupedTile> {
        GroupedTile::fit(
            (self.h_out(), self.w_out()),
            self.n * self.c_out,
            |t| (t - 1) * self.stride_h + (self.k_h - 1) * self.dilation_h + 1,
            |t| (t - 1) * self.stride_w + (self.k_w - 1) * self.dilation_w + 1,
        )
    }
    /// The tiling of the tiled input-gradient kernel (`grouped_conv_bwd_v2`): tiles of dx, and
    /// the rows and columns of dy that reach one, at most (t − 1 + (k − 1)·dil) / stride + 2
    /// for a tile of t (the kernels compute the same bound).
    pub fn grouped_tile_backward(&self) -> Option<GroupedTile> {
        GroupedTile::fit(
            (self.h_in, self.w_in),
            self.n * self.c_in,
            |t| (t - 1 + (self.k_h - 1) * self.dilation_h) / self.stride_h + 2,
            |t| (t - 1 + (self.k_w - 1) * self.dilation_w) / self.stride_w + 2,
        )
    }
    /// One group's conv as a conv over its own channels (the same spatial geometry).
    pub fn group_view(&self) -> Conv2dParams {
        Conv2dParams {
            c_in: self.c_in_group(),
            c_out: self.c_out_group(),
            groups: 1,
            ..*self
        }
    }
}

/// One workgroup of the tiled grouped conv: an `h` × `w` tile of pixels (at most 16 × 16) in
/// each of `planes` planes it computes (several small planes share a workgroup: 7×7 maps fill
/// 245 of its 256 invocations), one invocation per pixel; `workgroups` of them cover the
/// result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupedTile {
    pub h: usize,
    pub w: usize,
    pub planes: usize,
    pub workgroups: usize,
}

impl GroupedTile {
    /// Invocations per workgroup.
    pub const THREADS: usize = 256;
    /// Floats of workgroup memory for the input windows (16 KiB, WebGPU's guaranteed minimum).
    pub const PATCH: usize = 4096;

    /// Tiles of up to 16 × 16 over `count` planes of `plane` pixels; a tile of h × w reads a
    /// window of `rows(h)` × `cols(w)`. None when one window does not fit the workgroup memory.
    fn fit(
        plane: (usize, usize),
        count: usize,
        rows: impl Fn(usize) -> usize,
        cols: impl Fn(usize) -> usize,
    ) -> Option<GroupedTile> {
        let (h, w) = (plane.0.min(16), plane.1.min(16));
        let window = rows(h) * cols(w);
        let planes = (Self::THREADS / (h * w))
            .min(Self::PATCH / window.max(1))
            .max(1);
        (window <= Self::PATCH).then(|| GroupedTile {
            h,
            w,
            planes,
            workgroups: plane.0.div_ceil(h) * plane.1.div_ceil(w) * count.div_ceil(planes),
        })
    }
}
