//! `gradcam devices`: what each GPU backend finds on this machine, and what `--backend auto`
//! would pick.

use crate::backend::{cuda, wgpu};
use crate::error::Result;
use crate::runner::BackendKind;
use clap::ValueEnum;

pub fn run() -> Result<()> {
    let cuda = cuda::probe();
    match &cuda {
        Ok(()) => println!("cuda: available"),
        Err(e) => println!("cuda: not available ({e})"),
    }
    let adapters = wgpu::adapters();
    if adapters.is_empty() {
        println!("wgpu: no adapter");
    }
    for (name, hardware) in &adapters {
        let kind = if *hardware {
            "hardware GPU"
        } else {
            "software"
        };
        println!("wgpu: {name} [{kind}]");
    }
    let auto = BackendKind::Auto.resolve();
    let name = auto.to_possible_value().expect("every backend has a name");
    println!("--backend auto uses: {}", name.get_name());
    Ok(())
}
