// One torch.optim.SGD step on a parameter tensor, in place, in PyTorch's order:
// g = grad + wd·w; with momentum, buf = g (first step) or momentum·buf + g; w -= lr·buf.
// One invocation per element.

struct Sgd {
    len: u32,
    flags: u32,  // 1: weight decay, 2: momentum, 4: first step (the momentum buffer is new)
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> u: Sgd;

// grad [len] -> w [len] (updated), velocity [len] (updated; a dummy without momentum)
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> velocity: array<f32>;

@compute @workgroup_size(256)
fn sgd_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= u.len { return; }
    let wi = w[i];
    var g = grad[i];
    if (u.flags & 1u) != 0u {
        g = g + u.weight_decay * wi;
    }
    if (u.flags & 2u) != 0u {
        if (u.flags & 4u) == 0u {
            g = u.momentum * velocity[i] + g;
        }
        velocity[i] = g;
    }
    w[i] = wi - u.lr * g;
}
