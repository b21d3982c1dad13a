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
mod serve;
mod train;

use crate::named::Named;
pub use crate::runner::BackendKind;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gradcam",
    version,
    about = "Grad-CAM explanations for CNN image classifiers, without libtorch"
)]
struct Cli {
    /// Worker threads for the CPU backend and image decoding (default: all cores; 1 to 1024).
    #[arg(long, global = true, value_parser = parse_threads)]
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
    Explain(Box<explain::Args>),
    /// Show a model's detected architecture and every module path with its output shape.
    Inspect(inspect::Args),
    /// Measure images/s of Grad-CAM and of the plain forward pass, and time per kernel.
    Bench(bench::Args),
    /// Check every kernel of a backend against naive loops on seeded random inputs.
    Selftest(selftest::Args),
    /// Serve explanations over HTTP (Open Inference Protocol v2, KServe V1, Prometheus
    /// metrics), batching concurrent requests.
    Serve(Box<serve::Args>),
    /// List the CUDA devices and wgpu adapters found, and what --backend auto would use.
    Devices,
    /// Train or fine-tune a model on CIFAR-10 or the synthetic shapes set (CPU or wgpu).
    Train(train::Args),
    /// Pointing game on held-out shapes images: how often the CAM maximum is on the object.
    EvalPointing(eval_pointing::Args),
    /// Write sample images of the shapes data set (PNG), their input tensor and their boxes.
    ShapesSamples(samples::Args),
}

/// Weights and architecture, shared by every subcommand.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// A PyTorch state_dict saved with safetensors.torch.save_file, or a file written by scripts/export_model.py (its embedded graph is used).
    #[arg(long)]
    weights: PathBuf,
    /// Architecture variant, e.g. resnet50, mobilenet_v3_large, efficientnet_b0 (detected from
    /// the tensor names and shapes when omitted; an unknown name lists the known ones).
    #[arg(long)]
    arch: Option<String>,
    /// GoogLeNet / Inception v3: the checkpoint was trained without torchvision's
    /// `transform_input` (`googlenet(weights=None)` and custom training). torchvision's
    /// pretrained weights need it, so it is on by default; the weights cannot say which.
    #[arg(long)]
    no_transform_input: bool,
}

impl ModelArgs {
    fn load(&self) -> crate::Result<crate::model::Model> {
        let opts = crate::model::LoadOptions {
            arch: self.arch.clone(),
            transform_input: self.no_transform_input.then_some(false),
        };
        crate::model::Model::load_with(&self.weights, &opts)
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
        Command::Explain(a) => explain::run(*a),
        Command::Inspect(a) => inspect::run(a).map(|()| ExitCode::SUCCESS),
        Command::Bench(a) => bench::run(a).map(|()| ExitCode::SUCCESS),
        Command::Selftest(a) => selftest::run(a).map(|()| ExitCode::SUCCESS),
        Command::Serve(a) => serve::run(*a).map(|()| ExitCode::SUCCESS),
        Command::Devices => devices::run().map(|()| ExitCode::SUCCESS),
        Command::Train(a) => train::run(a).map(|()| ExitCode::SUCCESS),
        Command::EvalPointing(a) => eval_pointing::run(a).map(|()| ExitCode::SUCCESS),
        Command::ShapesSamples(a) => samples::run(a).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(crate::Error::Interrupted(sig)) => {
            ExitCode::from(crate::interrupt::exit_code(sig) as u8)
        }
        Err(e) => {
            eprintln!("error: {}", flags(&e.to_string()));
            match e {
                crate::Error::BadOption(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// The library's options that are flags here. Its messages name an option as `name` or
/// `name=value` (its Rust and Python name); the command line shows the flag instead.
const OPTIONS: [&str; 16] = [
    "method",
    "aug_smooth",
    "eigen_smooth",
    "smooth",
    "noise",
    "batch_size",
    "patch",
    "stride",
    "steps",
    "top_k",
    "arch",
    "transform_input",
    "max_image_pixels",
    "backend",
    "classes",
    "weights",
];

/// A library message with its options written as this command line's flags: `aug_smooth` as
/// --aug-smooth, `backend=cpu` as --backend cpu, `transform_input=false` as
/// --no-transform-input.
pub fn flags(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find('`') {
        let Some(len) = rest[start + 1..].find('`') else {
            break;
        };
        let quoted = &rest[start + 1..start + 1 + len];
        let (name, value) = quoted.split_once('=').unwrap_or((quoted, ""));
        out.push_str(&rest[..start]);
        if !OPTIONS.contains(&name) {
            out.push_str(&rest[start..start + len + 2]);
        } else if (name, value) == ("transform_input", "false") {
            out.push_str("--no-transform-input");
        } else {
            out.push_str("--");
            out.push_str(&name.replace('_', "-"));
            if !value.is_empty() {
                out.push(' ');
                out.push_str(value);
            }
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

fn parse_threads(s: &str) -> Result<usize, String> {
    let max = crate::limits::MAX_THREADS;
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        Ok(0) => Err("must be at least 1 (leave --threads out to use all cores)".into()),
        Ok(n) => Err(format!("{n} threads is more than the cap of {max}")),
        Err(_) if s.trim().starts_with('-') => Err(format!("'{s}' is negative")),
        Err(_) => Err(format!("'{s}' is not a number of threads")),
    }
}

/// clap's parser for a library enum chosen by name ([`Named`]): lists the names (with each one's
/// description in the long `--help`) and parses them as [`Named::parse`] does.
#[derive(Clone)]
pub struct NamedParser<T>(std::marker::PhantomData<T>);

pub fn named<T: Named + Send + Sync>() -> NamedParser<T> {
    NamedParser(std::marker::PhantomData)
}

impl<T: Named + Clone + Send + Sync> clap::builder::TypedValueParser for NamedParser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        // One rule for names, the library's (`Named::parse`: any case, spaces trimmed); clap's
        // parser only words the error.
        if let Some(v) = value.to_str().and_then(|s| T::parse(s).ok()) {
            return Ok(v);
        }
        let names = clap::builder::PossibleValuesParser::new(self.values());
        names.parse_ref(cmd, arg, value)?;
        Err(clap::Error::new(clap::error::ErrorKind::InvalidValue).with_cmd(cmd))
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(self.values().into_iter()))
    }
}

impl<T: Named> NamedParser<T> {
    fn values(&self) -> Vec<clap::builder::PossibleValue> {
        T::ALL
            .iter()
            .map(|v| match v.about() {
                "" => clap::builder::PossibleValue::new(v.name()),
                about => clap::builder::PossibleValue::new(v.name()).help(about),
            })
            .collect()
    }
}

/// A count or size given on the command line: a whole number from `min` to `max`.
pub fn parse_count(s: &str, min: u64, max: u64) -> Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') && t[1..].parse::<u64>().is_ok() {
        return Err(format!("'{s}' is negative"));
    }
    match t.parse::<u64>() {
        Ok(n) if n < min => Err(format!("must be at least {min}, got {n}")),
        Ok(n) if n > max => Err(format!("{n} is more than the largest accepted, {max}")),
        Ok(n) => Ok(n),
        Err(_) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("{t} is more than the largest accepted, {max}"))
        }
        Err(_) => Err(format!("'{s}' is not a whole number")),
    }
}

/// The largest image side or size accepted on the command line (PNG's and the image crate's
/// limit is 2^31 - 1; sizes are further bounded by the pixel limit).
pub const MAX_SIDE: u64 = u32::MAX as u64 >> 1;

/// Parses "HxW" or "N" (square); each side from 1 to `MAX_SIDE`.
pub fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let parse = |v: &str| {
        parse_count(v, 1, MAX_SIDE)
            .map(|d| d as usize)
            .map_err(|e| format!("'{s}' is not a size ({e}); use HxW or N, e.g. 224x224"))
    };
    match s.split_once(['x', 'X']) {
        Some((h, w)) => Ok((parse(h)?, parse(w)?)),
        None => parse(s).map(|d| (d, d)),
    }
}

#[cfg(test)]
mod tests {
    use super::flags;

    #[test]
    fn library_options_become_flags() {
        assert_eq!(
            flags("`aug_smooth` applies to CAMs; `method` lists gradcam twice"),
            "--aug-smooth applies to CAMs; --method lists gradcam twice"
        );
        assert_eq!(flags("use `backend=cpu`"), "use --backend cpu");
        assert_eq!(
            flags("`transform_input=false` applies"),
            "--no-transform-input applies"
        );
        assert_eq!(
            flags("see `gradcam inspect` and `x"),
            "see `gradcam inspect` and `x"
        );
    }
}
