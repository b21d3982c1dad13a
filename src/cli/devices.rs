//! `gradcam devices`: what each GPU backend finds on this machine, and what `--backend auto`
//! would pick.

use crate::backend::{cuda, wgpu};
use crate::error::Result;
use crate::named::Named;
use crate::runner::BackendKind;

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
    println!("--backend auto uses: {}", auto.name());
    Ok(())
}
