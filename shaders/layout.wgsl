// The strided copy behind concat, chunk/split, channel shuffle and permute
// (src/ops/layout.rs): dst[dst_offset + Σ i_k·dst_strides[k]] = src[src_offset +
// Σ i_k·src_strides[k]] for every index i of a rank-6 shape. One invocation per element.

struct Copy {
    shape: array<vec4<u32>, 2>,  // axes 0..5 (the last two words unused)
    src_st: array<vec4<u32>, 2>,
    dst_st: array<vec4<u32>, 2>,
    src_off: u32,
    dst_off: u32,
    len: u32,                    // elements copied
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> cp: Copy;

// strided_copy: src [any] -> dst [any], only the elements the copy names written.
@group(0) @binding(1) var<storage, read> cp_src: array<f32>;
@group(0) @binding(2) var<storage, read_write> cp_dst: array<f32>;

@compute @workgroup_size(256)
fn strided_copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= cp.len { return; }
    var rem = i;
    var s = cp.src_off;
    var d = cp.dst_off;
    for (var j = 5; j >= 0; j--) {
        let k = u32(j);
        let n = cp.shape[k / 4u][k % 4u];
        let ik = rem % n;
        rem = rem / n;
        s += ik * cp.src_st[k / 4u][k % 4u];
        d += ik * cp.dst_st[k / 4u][k % 4u];
    }
    cp_dst[d] = cp_src[s];
}
