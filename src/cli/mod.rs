//! The command line: argument parsing, and one readable error line with a non-zero exit
//! status for anything that goes wrong.

mod bench;
mod demo;
mod devices;
mod eval_pointing;
pub mod explain;
mod inspect;
mod samples;
mod selftest;
mod train;

pub use crate::runner::BackendKind;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gradcam",
    version,
    about = "Grad-CAM explanations for CNN image classifiers, without libtorch"
)]
struct Cli {
    /// Worker threads for the CPU backend (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Explain the bundled shapes samples with the bundled trained seed CNN: heatmaps and
    /// overlays in --out (default gradcam-demo/).
    Demo(demo::Args),
    /// Explain the predictions of a model on a batch of inputs.
    Explain(explain::Args),
    /// Show a model's detected architecture and every module path with its output shape.
    Inspect(inspect::Args),
    /// Measure images/s of Grad-CAM and of the plain forward pass, and time per kernel.
    Bench(bench::Args),
    /// Check every kernel of a backend against naive loops on seeded random inputs.
    Selftest(selftest::Args),
    /// List the CUDA devices and wgpu adapters found, and what --backend auto would use.
    Devices,
    /// Train or fine-tune a model on CIFAR-10 or the synthetic shapes set (CPU or wgpu).
    Train(train::Args),
    /// Pointing game on held-out shapes images: how often the CAM maximum is on the object.
    EvalPointing(eval_pointing::Args),
    /// Write sample images of the shapes data set (PNG), their input tensor and their boxes.
    ShapesSamples(samples::Args),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Method {
    /// Grad-CAM, as pytorch-grad-cam's `GradCAM`.
    Gradcam,
    /// Guided backpropagation (kazuto1011/grad-cam-pytorch): d class score / d input, with
    /// ReLUs passing back only positive gradients.
    GuidedBackprop,
    /// Guided backpropagation times the upsampled Grad-CAM (kazuto1011/grad-cam-pytorch).
    GuidedGradcam,
}

/// Weights and architecture, shared by every subcommand.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// A PyTorch state_dict saved with safetensors.torch.save_file.
    #[arg(long)]
    weights: PathBuf,
    /// Architecture (detected from the tensor names when omitted): seed-cnn, vgg11..vgg19[_bn], resnet18..resnet152.
    #[arg(long)]
    arch: Option<String>,
}

impl ModelArgs {
    fn load(&self) -> crate::Result<crate::model::Model> {
        crate::model::Model::load(&self.weights, self.arch.as_deref())
    }
}

pub fn run() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error ({info}); please report this as a bug");
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Some(n) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
        {
            eprintln!("error: cannot start {n} threads: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Explain(a) => explain::run(a),
        Command::Inspect(a) => inspect::run(a).map(|()| ExitCode::SUCCESS),
        Command::Bench(a) => bench::run(a).map(|()| ExitCode::SUCCESS),
        Command::Selftest(a) => selftest::run(a).map(|()| ExitCode::SUCCESS),
        Command::Devices => devices::run().map(|()| ExitCode::SUCCESS),
        Command::Train(a) => train::run(a).map(|()| ExitCode::SUCCESS),
        Command::EvalPointing(a) => eval_pointing::run(a).map(|()| ExitCode::SUCCESS),
        Command::ShapesSamples(a) => samples::run(a).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parses "HxW" or "N" (square).
pub fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let parse = |v: &str| v.trim().parse::<usize>().ok().filter(|&d| d > 0);
    let size = match s.split_once(['x', 'X']) {
        Some((h, w)) => parse(h).zip(parse(w)),
        None => parse(s).map(|d| (d, d)),
    };
    size.ok_or_else(|| format!("'{s}' is not a size; use HxW or N, e.g. 224x224"))
}
