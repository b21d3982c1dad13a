// Binary ops with broadcasting over rank-4 shapes (src/ops/binary.rs): add and mul, and the
// input gradient of one operand, dy (times the other operand for mul) summed over the axes
// that operand was broadcast along. The backward pass is a gather: one invocation per element
// of the operand's gradient, summing its output positions in row-major order (deterministic,
// no atomics).

struct BinaryFwd {
    out: vec4<u32>,  // output shape
    sa: vec4<u32>,   // a's element strides at the output's indices (0 on broadcast axes)
    sb: vec4<u32>,   // b's, likewise
    op: u32,         // 0 add, 1 mul
    len: u32,        // output elements
    _pad0: u32, _pad1: u32,
}

struct BinaryBwd {
    out: vec4<u32>,    // output shape
    shape: vec4<u32>,  // the operand's shape (each axis the output's or 1)
    so: vec4<u32>,     // the other operand's strides at the output's indices (mul only)
    mul: u32,          // 1: multiply by the other operand
    len: u32,          // the operand's elements
    reduced: u32,      // output positions per operand element (product of the broadcast axes)
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> bf: BinaryFwd;
@group(0) @binding(0) var<uniform> bb: BinaryBwd;

// binary_fwd: a [bf.sa's shape], b [..] -> y [out]
@group(0) @binding(1) var<storage, read> bnf_a: array<f32>;
@group(0) @binding(2) var<storage, read> bnf_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> bnf_y: array<f32>;

@compute @workgroup_size(256)
fn binary_fwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= bf.len { return; }
    var rem = i;
    var ia = 0u;
    var ib = 0u;
    for (var k = 3; k >= 0; k--) {
        let ik = rem % bf.out[k];
        rem = rem / bf.out[k];
        ia += ik * bf.sa[k];
        ib += ik * bf.sb[k];
    }
    let u = bnf_a[ia];
    let v = bnf_b[ib];
    bnf_y[i] = select(u + v, u * v, bf.op == 1u);
}

// binary_bwd: dy [out], other [its shape] (any buffer for add) -> dx [shape]
@group(0) @binding(1) var<storage, read> bnb_dy: array<f32>;
@group(0) @binding(2) var<storage, read> bnb_other: array<f32>;
@group(0) @binding(3) var<storage, read_write> bnb_dx: array<f32>;

@compute @workgroup_size(256)
fn binary_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wg, nwg, lid);
    if e >= bb.len { return; }
    var idx: vec4<u32>;
    var rem = e;
    for (var k = 3; k >= 0; k--) {
        idx[k] = rem % bb.shape[k];
        rem = rem / bb.shape[k];
    }
    var acc = 0.0;
    for (var r = 0u; r < bb.reduced; r++) {
        var rr = r;
        var o = 0u;
        var oth = 0u;
        var st = 1u;
        for (var k = 3; k >= 0; k--) {
            var ik = idx[k];
            if bb.shape[k] == 1u && bb.out[k] != 1u {
                ik = rr % bb.out[k];
                rr = rr / bb.out[k];
            }
            o += ik * st;
            st *= bb.out[k];
            oth += ik * bb.so[k];
        }
        var v = bnb_dy[o];
        if bb.mul == 1u {
            v *= bnb_other[oth];
        }
        acc += v;
    }
    bnb_dx[e] = acc;
}
