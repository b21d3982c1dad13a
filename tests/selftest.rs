//! `gradcam selftest`: the CPU backend and the wgpu backend (on lavapipe in CI, both conv
//! variants) pass against naive loops, and a CUDA request on a machine without CUDA is one
//! clear error line. `gradcam devices` lists what each backend finds.

mod common;
use common::gradcam;

#[test]
fn cpu_selftest_passes_with_one_line_per_kernel() {
    let out = gradcam(&["selftest", "--backend", "cpu"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for kernel in [
        "conv2d ",
        "conv2d_grad_input",
        "max_pool2d ",
        "max_pool2d_grad_input",
        "adaptive_avg_pool2d ",
        "adaptive_avg_pool2d_grad_input",
        "relu ",
        "relu_grad_input",
        "add ",
        "class_seed",
        "channel_affine ",
        "channel_affine_grad_input",
        "linear ",
        "linear_grad_input",
        "grad_cam Mean ",
        "grad_cam PlusPlus ",
        "grad_cam XGrad ",
        "grad_cam HiRes ",
        "grad_cam ElementWise ",
        "grad_cam Layer ",
        "grad_cam Fem ",
        "grad_cam Weights ",
        "224x224 once",
        "conv2d_fused",
        "grouped conv2d ",
        "grouped conv2d_grad_input",
        "activation hardswish",
        "activation_grad_input gelu",
        "binary mul",
        "binary_grad_input",
        "avg_pool2d ",
        "avg_pool2d_grad_input",
        "adaptive_max_pool2d ",
        "adaptive_max_pool2d_grad_input",
        "strided_copy",
        "layer_norm ",
        "layer_norm_grad_input",
    ] {
        assert!(stdout.contains(kernel), "no line for {kernel}: {stdout}");
    }
    assert!(
        stdout
            .lines()
            .filter(|l| l.trim_start().starts_with("ok "))
            .count()
            >= 50
    );
    assert!(!stdout.contains("FAIL"));
    assert!(stdout.contains("selftest: all"));
}

#[test]
fn library_selftest_on_the_cpu_backend() {
    let b = gradcam::internal::backend::cpu::CpuBackend { poison: true };
    let lines = gradcam::internal::backend::check::run(
        &b,
        gradcam::internal::backend::check::Precision::Fp32,
    );
    assert!(
        lines.iter().all(|l| l.ok && l.max_err.is_finite()),
        "{lines:#?}"
    );
}

#[test]
fn cuda_selftest_without_a_device_is_one_error_line() {
    if gradcam::internal::backend::cuda::is_available() {
        println!("SKIPPED: a CUDA device is present (tests/cuda_kernels.rs runs the GPU selftest)");
        return;
    }
    let out = gradcam(&["selftest", "--backend", "cuda"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: backend cuda: "), "{stderr}");
    assert!(
        !stderr.contains("panic") && !stderr.contains("internal error"),
        "{stderr}"
    );
}

#[test]
fn auto_backend_falls_back_to_cpu_without_cuda() {
    if gradcam::internal::backend::cuda::is_available() {
        println!("SKIPPED: a CUDA device is present");
        return;
    }
    let out = gradcam(&["selftest"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("backend cpu"));
}

#[test]
fn wgpu_selftest_passes_for_both_conv_variants() {
    let out = gradcam(&["selftest", "--backend", "wgpu"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("conv v1)") && stdout.contains("conv v2)"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("selftest: all"), "{stdout}");
}

#[test]
fn devices_lists_what_each_backend_finds() {
    let out = gradcam(&["devices"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.lines().next().unwrap_or("").starts_with("cuda: "),
        "{stdout}"
    );
    // CI and development machines have lavapipe.
    assert!(stdout.contains("[software]"), "{stdout}");
    assert!(
        stdout
            .trim_end()
            .lines()
            .last()
            .unwrap_or("")
            .starts_with("--backend auto uses: "),
        "{stdout}"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn wgpu_refuses_the_cuda_only_conv_kernels() {
    for k in ["v3", "v4"] {
        let out = gradcam(&["selftest", "--backend", "wgpu", "--conv-kernel", k]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!("conv kernel {k} exists on the CUDA backend only")),
            "{stderr}"
        );
    }
}
