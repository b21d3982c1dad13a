//! `gradcam selftest --backend B`: every kernel of a backend against naive f64 loops (see
//! `crate::selftest`), one line per kernel; exits non-zero when any check fails.

use super::BackendKind;
use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::{self, ConvKernel, CudaBackend};
use crate::error::{Error, Result};
use crate::selftest::{run_with, Line, Tolerances};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendKind,
    /// CUDA: check only this conv kernel variant (default: every variant the device supports).
    #[arg(long, value_enum)]
    conv_kernel: Option<ConvKernel>,
}

fn print(title: &str, lines: &[Line]) -> usize {
    println!("{title}");
    for l in lines {
        println!("  {l}");
    }
    lines.iter().filter(|l| !l.ok).count()
}

pub fn run(a: Args) -> Result<()> {
    let kind = match a.backend {
        BackendKind::Auto if cuda::is_available() => BackendKind::Cuda,
        BackendKind::Auto => BackendKind::Cpu,
        k => k,
    };
    let mut failed = 0;
    let mut checked = 0;
    match kind {
        BackendKind::Cpu | BackendKind::Auto => {
            let b = CpuBackend { poison: true };
            let lines = run_with(&b, Tolerances::FP32);
            checked += lines.len();
            failed += print(
                &format!("backend {}", crate::backend::Backend::name(&b)),
                &lines,
            );
        }
        BackendKind::Cuda => {
            let variants = match a.conv_kernel {
                Some(k) => vec![k],
                None => vec![ConvKernel::V1, ConvKernel::V2],
            };
            for conv in variants {
                let mut b = match CudaBackend::new(0, Some(conv)) {
                    Ok(b) => b,
                    // v2 on a device without TF32 tensor cores: say so, check the rest.
                    Err(e)
                        if conv == ConvKernel::V2
                            && a.conv_kernel.is_none()
                            && cuda::is_available() =>
                    {
                        println!("conv kernel v2 skipped: {e}");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                b.poison = true;
                let tol = match conv {
                    ConvKernel::V1 => Tolerances::FP32,
                    ConvKernel::V2 => Tolerances::TF32_CONV,
                };
                let lines = run_with(&b, tol);
                checked += lines.len();
                failed += print(
                    &format!("backend {}", crate::backend::Backend::name(&b)),
                    &lines,
                );
            }
        }
    }
    if failed > 0 {
        return Err(Error::Usage(format!(
            "selftest: {failed} of {checked} checks failed"
        )));
    }
    println!("selftest: all {checked} checks passed");
    Ok(())
}
