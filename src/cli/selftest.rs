//! `gradcam selftest --backend B`: every kernel of a backend against naive f64 loops (see
//! `crate::backend::check`), one line per kernel; exits non-zero when any check fails.

use super::BackendKind;
use crate::backend::check::{self, Line, Precision};
use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::{self, CudaBackend};
use crate::backend::wgpu::{AdapterChoice, WgpuBackend};
use crate::backend::{Backend, ConvKernel};
use crate::error::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// `auto` checks the backend `explain --backend auto` would use.
    #[arg(long, value_parser = super::named::<BackendKind>(), default_value = "auto")]
    backend: BackendKind,
    /// GPU backends: check only this conv kernel variant (default: every variant the device
    /// supports).
    #[arg(long, hide = true, value_parser = super::named::<ConvKernel>())]
    conv_kernel: Option<ConvKernel>,
}

/// Prints the lines of one backend configuration; returns (checked, failed).
fn report<B: Backend>(b: &B, precision: Precision) -> (usize, usize) {
    let lines: Vec<Line> = check::run(b, precision);
    println!("backend {}", b.name());
    for l in &lines {
        println!("  {l}");
    }
    (lines.len(), lines.iter().filter(|l| !l.ok).count())
}

pub fn run(a: Args) -> Result<()> {
    let kind = a.backend.resolve();
    // Every conv variant of the backend unless one is named.
    let variants = |all: &[ConvKernel]| match a.conv_kernel {
        Some(k) => vec![k],
        None => all.to_vec(),
    };
    let (mut checked, mut failed) = (0, 0);
    let mut add = |(c, f): (usize, usize)| {
        checked += c;
        failed += f;
    };
    match kind {
        BackendKind::Cpu | BackendKind::Auto => {
            add(report(&CpuBackend { poison: true }, Precision::Fp32))
        }
        BackendKind::Wgpu => {
            for conv in variants(&[ConvKernel::V1, ConvKernel::V2]) {
                let mut b = WgpuBackend::new(AdapterChoice::Any)?;
                b.poison = true;
                b.set_conv(conv)?;
                add(report(&b, Precision::Fp32));
            }
        }
        BackendKind::Cuda => {
            let all = [
                ConvKernel::V1,
                ConvKernel::V2,
                ConvKernel::V3,
                ConvKernel::V4,
            ];
            for conv in variants(&all) {
                let mut b = match CudaBackend::new(0, Some(conv)) {
                    Ok(b) => b,
                    // A tensor-core variant on a device without them: say so, check the rest.
                    Err(e)
                        if conv.tensor_cores()
                            && a.conv_kernel.is_none()
                            && cuda::is_available() =>
                    {
                        println!("conv kernel {} skipped: {e}", conv.label());
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                b.poison = true;
                add(report(&b, Precision::of_conv(conv)));
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
