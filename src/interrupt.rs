//! SIGINT and SIGTERM during a run: the first one asks the run to stop (no new image is
//! started, the files being written are finished and renamed into place), and the command
//! then exits with 130 or 143; a second one exits at once, but only after the files being
//! written are finished, so that no temporary file is ever left behind. SIGXFSZ (a file size
//! limit) is caught too, so that an oversized write fails with EFBIG like any write error
//! instead of killing the process.
//!
//! `install` is called by the commands that write results (`explain`, `demo`); other commands
//! keep the default behaviour (terminate at once).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

/// Held (shared) by every file write from its temporary file to its rename; the signal thread
/// takes it exclusively before exiting.
static WRITES: RwLock<()> = RwLock::new(());
/// The first SIGINT or SIGTERM received, 0 before.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Starts handling SIGINT, SIGTERM and SIGXFSZ (once per process; later calls do nothing).
pub fn install() {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGXFSZ};
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    // A caught SIGXFSZ does nothing; the write that caused it fails with EFBIG.
    let _ = signal_hook::flag::register(SIGXFSZ, Arc::new(AtomicBool::new(false)));
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if SIGNAL
                .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                // The second signal: stop now, once the files in flight are complete.
                let _all_written = WRITES.write();
                eprintln!("interrupted");
                std::process::exit(exit_code(sig));
            }
        }
    });
}

/// The signal that asked the run to stop, if any.
pub fn requested() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The exit status after signal `sig`: 128 + its number (130 for SIGINT, 143 for SIGTERM).
pub fn exit_code(sig: i32) -> i32 {
    128 + sig
}

/// The name of `sig`, for the last stderr line.
pub fn name(sig: i32) -> &'static str {
    match sig {
        signal_hook::consts::SIGINT => "SIGINT",
        signal_hook::consts::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// Held while a file goes from its temporary name to its final one.
pub fn writing() -> RwLockReadGuard<'static, ()> {
    WRITES.read().unwrap_or_else(|e| e.into_inner())
}
