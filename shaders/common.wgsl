// Prepended by the host to every other shader file (WGSL has no #include).

// The flat invocation index of a 1-D kernel of 256-wide workgroups whose dispatch the host
// folded into 2-D, because a single dimension holds at most 65,535 workgroups.
fn flat_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * 256u + lid;
}

// The flat workgroup index of a kernel with one workgroup per item, folded the same way.
fn flat_group(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.y * nwg.x + wg.x;
}
