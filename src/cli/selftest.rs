//! `gradcam selftest --backend B`: every kernel of a backend against naive f64 loops (see
//! `crate::selftest`), one line per kernel; exits non-zero when any check fails.

use super::BackendKind;
use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::{self, CudaBackend};
use crate::backend::wgpu::{AdapterChoice, WgpuBackend};
use crate::backend::{Backend, ConvKernel};
use crate::error::{Error, Result};
use crate::selftest::{run_with, Line, Tolerances};

#[derive(clap::Args)]
pub struct Args {
    /// `auto` checks the backend `explain --backend auto` would use.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendKind,
    /// GPU backends: check only this conv kernel variant (default: every variant the device
    /// supports).
    #[arg(long, value_enum)]
    conv_kernel: Option<ConvKernel>,
}

/// Prints the lines of one backend configuration; returns (checked, failed).
fn report<B: Backend>(b: &B, tol: Tolerances) -> (usize, usize) {
    let lines: Vec<Line> = run_with(b, tol);
    println!("backend {}", b.name());
    for l in &lines {
        println!("  {l}");
    }
    (lines.len(), lines.iter().filter(|l| !l.ok).count())
}

pub fn run(a: Args) -> Result<()> {
    let kind = a.backend.resolve();
    let variants = match a.conv_kernel {
        Some(k) => vec![k],
        None => vec![ConvKernel::V1, ConvKernel::V2],
    };
    let (mut checked, mut failed) = (0, 0);
    let mut add = |(c, f): (usize, usize)| {
        checked += c;
        failed += f;
    };
    match kind {
        BackendKind::Cpu | BackendKind::Auto => {
            add(report(&CpuBackend { poison: true }, Tolerances::FP32))
        }
        BackendKind::Wgpu => {
            for conv in variants {
                let mut b = WgpuBackend::new(AdapterChoice::Any)?;
                b.poison = true;
                b.conv = conv;
                add(report(&b, Tolerances::FP32));
            }
        }
        BackendKind::Cuda => {
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
                add(report(&b, tol));
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
