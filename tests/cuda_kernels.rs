//! The CUDA kernels on a machine without a GPU: every `kernels/*.cu` must compile with NVRTC
//! (CI installs NVRTC from PyPI, see .ci/run), so syntax and template errors are caught on
//! every submission. Tests that need a device print why they skip.

use gradcam::internal::backend::check::{self, Precision};
use gradcam::internal::backend::cuda::{self, kernels};
use gradcam::internal::backend::ConvKernel;

/// Architectures compiled here: sm_80 (A100, first with TF32 mma) and sm_90 (H100/H200), plus
/// sm_75 to check that the tensor-core code is compiled out below sm_80 (v1 is used there).
const ARCHS: &[&str] = &["sm_75", "sm_80", "sm_90"];

#[test]
fn every_kernel_file_compiles_with_nvrtc() {
    assert!(
        kernels::nvrtc_available(),
        "NVRTC (libnvrtc.so or libnvrtc.so.12) cannot be loaded: this test needs it. \
         `pip install nvidia-cuda-nvrtc-cu12` and put its nvidia/cuda_nvrtc/lib on \
         LD_LIBRARY_PATH (.ci/run does this)"
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cu"))
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = kernels::SOURCES
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    embedded.sort();
    assert_eq!(
        on_disk, embedded,
        "every kernels/*.cu file must be embedded"
    );
    for arch in ARCHS {
        let mut entries = std::collections::HashMap::new();
        for (name, src) in kernels::SOURCES {
            let ptx = kernels::compile(name, src, arch).unwrap_or_else(|e| panic!("{e}"));
            let text = ptx.to_src();
            assert!(
                text.contains(".entry"),
                "{name} for {arch}: no kernel in the PTX"
            );
            entries.extend(ptx_entries(&text));
            if *name == "conv2d.cu" && *arch != "sm_75" {
                assert!(
                    text.contains("mma.sync"),
                    "{name} for {arch}: no tensor-core mma"
                );
            }
        }
        // The backend looks every one of these up when it starts.
        for (kernel, _, _) in cuda::kernel_layouts() {
            assert!(
                entries.contains_key(kernel),
                "{kernel} is not a kernel of kernels/*.cu for {arch}"
            );
        }
        // Buffers are pointers (.u64); the scalars one struct, last, as large and as aligned as
        // the Rust struct the launch passes.
        for (kernel, size, align) in cuda::kernel_layouts() {
            let params = &entries[kernel];
            let (last, pointers) = params.split_last().expect("a kernel with parameters");
            for p in pointers {
                assert!(
                    p.starts_with(".param .u64 "),
                    "{kernel} for {arch}: `{p}` is not a pointer"
                );
            }
            let want = format!(
                ".param .align {align} .b8 {kernel}_param_{}[{size}]",
                pointers.len()
            );
            assert_eq!(
                *last, want,
                "{kernel} for {arch}: the argument struct's layout differs from Rust's"
            );
        }
    }
}

/// Every `.entry name(` of a PTX text with its parameter declarations.
fn ptx_entries(ptx: &str) -> Vec<(String, Vec<String>)> {
    let mut out = vec![];
    let mut lines = ptx.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.split(".entry ").nth(1) else {
            continue;
        };
        let name = rest.trim_end_matches(['(', ' ']).to_string();
        let params = lines
            .by_ref()
            .map(str::trim)
            .take_while(|l| *l != ")")
            .map(|l| l.trim_end_matches(',').to_string())
            .collect();
        out.push((name, params));
    }
    out
}

#[test]
fn cuda_backend_without_a_device_is_a_clear_error() {
    if cuda::is_available() {
        println!("a CUDA device is present: nothing to check here");
        return;
    }
    let err = cuda::CudaBackend::new(0, None).err().expect("no device");
    let msg = err.to_string();
    assert!(msg.starts_with("backend cuda: "), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn cuda_selftest_on_a_device() {
    if !cuda::is_available() {
        println!("SKIPPED cuda_selftest_on_a_device: no CUDA device on this machine");
        return;
    }
    for conv in [
        ConvKernel::V1,
        ConvKernel::V2,
        ConvKernel::V3,
        ConvKernel::V4,
    ] {
        let Ok(mut b) = cuda::CudaBackend::new(0, Some(conv)) else {
            println!("SKIPPED conv {conv:?}: not supported on this device");
            continue;
        };
        b.poison = true;
        let report = check::run(&b, Precision::of_conv(conv));
        for line in &report {
            println!("{line}");
        }
        assert!(report.iter().all(|l| l.ok), "selftest failed on {conv:?}");
    }
}
