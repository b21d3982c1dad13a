use std::process::ExitCode;

fn main() -> ExitCode {
    // Mesa's Vulkan device-select layer connects to the display server to find the GPU that
    // drives the screen, and on a headless machine prints "XDG_RUNTIME_DIR is invalid" to
    // stderr. We rank adapters ourselves, so turn it off unless the user set it. Done first,
    // before any thread exists, because setting the environment is not thread-safe.
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
    gradcam::internal::cli::run()
}
