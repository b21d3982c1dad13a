use std::process::ExitCode;

fn main() -> ExitCode {
    gradcam::cli::run()
}
