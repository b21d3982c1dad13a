//! `gradcam demo`: a meaningful explanation before the user brings a model. The seed CNN
//! trained on the synthetic shapes set by `gradcam train` (examples/seed-cnn-shapes.safetensors)
//! explains six held-out shapes images (examples/shapes/), all embedded in the binary, so the
//! demo needs no files. It is `explain` with fixed arguments: one code path for both.

use super::explain;
use super::BackendKind;
use crate::error::{Error, Result};
use crate::named::Named;
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const MODEL: &[u8] = include_bytes!("../../examples/seed-cnn-shapes.safetensors");
const SAMPLES: [(&str, &[u8]); 6] = [
    (
        "sample_0.png",
        include_bytes!("../../examples/shapes/sample_0.png"),
    ),
    (
        "sample_1.png",
        include_bytes!("../../examples/shapes/sample_1.png"),
    ),
    (
        "sample_2.png",
        include_bytes!("../../examples/shapes/sample_2.png"),
    ),
    (
        "sample_3.png",
        include_bytes!("../../examples/shapes/sample_3.png"),
    ),
    (
        "sample_4.png",
        include_bytes!("../../examples/shapes/sample_4.png"),
    ),
    (
        "sample_5.png",
        include_bytes!("../../examples/shapes/sample_5.png"),
    ),
];
/// The shapes set's classes, in label order (src/data/shapes.rs).
const LABELS: &str = "circle\nsquare\ntriangle\n";
/// relu2's map is 10×10 for a 32×32 input (conv3's is 3×3, too coarse for 10–20 px objects);
/// it is the layer with the best pointing game for this model (README, "Training").
const LAYER: &str = "relu2";

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the heatmaps and overlays.
    #[arg(long, default_value = "gradcam-demo")]
    out: PathBuf,
    #[arg(long, value_parser = super::named::<BackendKind>(), default_value = "auto")]
    backend: BackendKind,
}

/// `explain`'s arguments, parsed the way the command line parses them.
#[derive(Parser)]
struct Explain {
    #[command(flatten)]
    args: explain::Args,
}

/// Removes the unpacked demo files however `run` ends.
struct Unpacked(PathBuf);

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}

pub fn run(a: Args) -> Result<ExitCode> {
    let dir = Unpacked(std::env::temp_dir().join(format!("gradcam-demo-{}", std::process::id())));
    let samples = dir.0.join("shapes");
    std::fs::create_dir_all(&samples).map_err(|source| Error::Write {
        path: samples.clone(),
        source,
    })?;
    let (model, labels) = (dir.0.join("model.safetensors"), dir.0.join("labels.txt"));
    write(&model, MODEL)?;
    write(&labels, LABELS.as_bytes())?;
    for (name, bytes) in SAMPLES {
        write(&samples.join(name), bytes)?;
    }
    let backend = a.backend.name();
    let argv = [
        "explain".as_ref(),
        "--weights".as_ref(),
        model.as_os_str(),
        "--layer".as_ref(),
        LAYER.as_ref(),
        "--labels".as_ref(),
        labels.as_os_str(),
        "--overlay-original".as_ref(),
        "--backend".as_ref(),
        backend.as_ref(),
        "--out".as_ref(),
        a.out.as_os_str(),
        samples.as_os_str(),
    ];
    let parsed = Explain::try_parse_from(argv).expect("the demo's explain arguments parse");
    explain::run(parsed.args)
}
