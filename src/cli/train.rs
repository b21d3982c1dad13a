use super::BackendKind;
use crate::backend::cpu::CpuBackend;
use crate::backend::wgpu::{AdapterChoice, WgpuBackend};
use crate::backend::{ConvKernel, TrainBackend};
use crate::data::{cifar, shapes, Dataset, Splits};
use crate::error::{Error, Result};
use crate::model::weights::WeightStore;
use crate::model::Model;
use crate::ops::SgdParams;
use crate::train::{checkpoint, fit, init, FitOptions, StateDict, Trainer};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Architecture of a fresh model (seed-cnn, vgg11..vgg19[_bn]); with --init, detected
    /// from the weights when omitted.
    #[arg(long)]
    arch: Option<String>,
    /// A CIFAR-10 binary directory (data_batch_1.bin … data_batch_5.bin, test_batch.bin), or
    /// `shapes` for the built-in synthetic data set.
    #[arg(long)]
    data: String,
    #[arg(long, allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, 1000000))]
    epochs: u64,
    #[arg(long, default_value_t = 64, allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, 65536))]
    batch_size: u64,
    /// Learning rate (finite, positive).
    #[arg(long, allow_hyphen_values = true, value_parser = |s: &str| parse_float(s, false))]
    lr: f64,
    /// SGD momentum (finite, at least 0).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true, value_parser = |s: &str| parse_float(s, true))]
    momentum: f64,
    /// L2 weight decay (finite, at least 0).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true, value_parser = |s: &str| parse_float(s, true))]
    weight_decay: f64,
    /// Random crop with padding 4 and horizontal flip of every training batch.
    #[arg(long)]
    augment: bool,
    /// Start from these weights (a PyTorch state_dict in safetensors) instead of a fresh model.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Replace the last linear layer by a fresh one with this many classes (fine-tuning).
    #[arg(long, allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, 1000000))]
    replace_head: Option<u64>,
    /// Seed of initialisation, shuffling, augmentation, dropout and the shapes data.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training images generated for `--data shapes`.
    #[arg(long, default_value_t = 20000, allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, 100000000))]
    train_count: u64,
    /// Test images generated for `--data shapes`.
    #[arg(long, default_value_t = 2000, allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, 100000000))]
    test_count: u64,
    /// Where to save the trained weights (safetensors, PyTorch tensor names).
    #[arg(long)]
    out: PathBuf,
    /// cpu, wgpu (any adapter, lavapipe included), or auto. CUDA has no training kernels. `auto` is
    /// wgpu on a hardware GPU adapter, else cpu. Results agree across backends to f32
    /// rounding, not bit for bit.
    #[arg(long, value_parser = super::named::<BackendKind>(), default_value = "cpu", hide_possible_values = true)]
    backend: BackendKind,
}

fn parse_float(s: &str, zero: bool) -> std::result::Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if !v.is_finite() || v < 0.0 || (!zero && v == 0.0) {
        return Err(format!(
            "'{s}': must be finite and {}",
            if zero { "at least 0" } else { "positive" }
        ));
    }
    Ok(v)
}

pub fn run(a: Args) -> Result<()> {
    if a.backend == BackendKind::Cuda {
        return Err(Error::Backend {
            backend: "cuda".into(),
            reason: "training is not implemented on CUDA; use --backend cpu or wgpu".into(),
        });
    }
    let Splits { train, test } = if a.data == "shapes" {
        crate::limits::check_memory(
            "the shapes images",
            (a.train_count + a.test_count) * (crate::data::IMAGE_LEN as u64 * 4),
        )
        .map_err(Error::Usage)?;
        shapes::splits(a.train_count as usize, a.test_count as usize, a.seed)
    } else {
        cifar::load(std::path::Path::new(&a.data))?
    };
    let classes = train.classes();
    let state = match &a.init {
        Some(path) => {
            let store = WeightStore::load(path)?;
            let model = Model::from_store(&store, a.arch.as_deref())?;
            let mut state = store.state_dict();
            if let Some(c) = a.replace_head {
                init::replace_head(&mut state, &model, c as usize, a.seed)?;
            }
            state
        }
        None => {
            let arch = a.arch.as_deref().ok_or_else(|| {
                Error::Usage("give --arch for a fresh model, or --init WEIGHTS".into())
            })?;
            if a.replace_head.is_some() {
                return Err(Error::Usage("--replace-head needs --init".into()));
            }
            init::fresh(arch, classes, a.seed)?
        }
    };
    let sgd = SgdParams {
        lr: a.lr,
        momentum: a.momentum,
        weight_decay: a.weight_decay,
    };
    let conv = ConvKernel::from_env()?;
    match a.backend {
        BackendKind::Cuda => unreachable!("refused above"),
        BackendKind::Cpu => train_on(CpuBackend::default(), &a, state, sgd, &train, &test),
        BackendKind::Wgpu => {
            let be = wgpu(AdapterChoice::Any, conv)?;
            train_on(be, &a, state, sgd, &train, &test)
        }
        BackendKind::Auto => match wgpu(AdapterChoice::RealGpu, conv) {
            Ok(be) => train_on(be, &a, state, sgd, &train, &test),
            // No hardware GPU: a software rasterizer is slower than the CPU backend.
            Err(_) => train_on(CpuBackend::default(), &a, state, sgd, &train, &test),
        },
    }
}

/// The wgpu backend, with the conv kernel variant of `GRADCAM_CONV_KERNEL` when set.
fn wgpu(choice: AdapterChoice, conv: Option<ConvKernel>) -> Result<WgpuBackend> {
    let mut be = WgpuBackend::new(choice)?;
    if let Some(k) = conv {
        be.set_conv(k)?;
    }
    Ok(be)
}

fn train_on<B: TrainBackend>(
    backend: B,
    a: &Args,
    state: StateDict,
    sgd: SgdParams,
    train: &Dataset,
    test: &Dataset,
) -> Result<()> {
    let mut trainer = Trainer::with_backend(backend, state, a.arch.as_deref(), sgd, a.seed)?;
    eprintln!(
        "training {} ({} classes) on {} training and {} test images, backend {}",
        trainer.model.arch,
        trainer.model.num_classes,
        train.len(),
        test.len(),
        trainer.backend.name()
    );
    let opts = FitOptions {
        epochs: a.epochs as usize,
        batch_size: a.batch_size as usize,
        augment: a.augment,
        seed: a.seed,
        progress: std::io::stderr().is_terminal(),
    };
    fit(&mut trainer, train, test, &opts, |r| {
        println!(
            "epoch {}/{}: loss {:.4}, train accuracy {:.2}%, test accuracy {:.2}%",
            r.epoch,
            a.epochs,
            r.loss,
            100.0 * r.train_accuracy,
            100.0 * r.test_accuracy
        );
    })?;
    checkpoint::save(&a.out, &trainer.state_dict()?)?;
    eprintln!("saved {}", a.out.display());
    Ok(())
}
