//! Limits that keep untrusted input from exhausting the machine: the image pixel limit
//! (Pillow's `MAX_IMAGE_PIXELS`), the thread cap, bounded reads, and the memory actually
//! available to this process (`/proc/meminfo`'s `MemAvailable`, lowered by a cgroup v2 limit).

use std::io::Read;

/// Pillow's default `Image.MAX_IMAGE_PIXELS`: 1024 · 1024 · 1024 / 4 / 3 pixels. Above it Pillow
/// warns (and refuses above twice as many); here any image, resized image or network input
/// with more pixels is refused (`--max-image-pixels` raises it).
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 89_478_485;

/// The most `--threads` accepts.
pub const MAX_THREADS: usize = 1024;

/// Bytes available for new allocations, when the system says (Linux); `None` elsewhere.
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemAvailable:")?;
        rest.trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
    })?;
    let mut avail = kib.saturating_mul(1024);
    // A cgroup v2 memory limit (containers) may be far below the machine's memory.
    let read = |f: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{f}"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    if let (Some(max), Some(cur)) = (read("memory.max"), read("memory.current")) {
        avail = avail.min(max.saturating_sub(cur));
    }
    Some(avail)
}

/// `bytes` as "1.5 GiB", "12.0 MiB", "800 bytes".
pub fn fmt_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Fails when `bytes` (what `what` needs) exceed the memory available now.
pub fn check_memory(what: &str, bytes: u64) -> Result<(), String> {
    match available_memory() {
        Some(avail) if bytes > avail => Err(format!(
            "{what} needs about {}, more than the {} of memory available",
            fmt_bytes(bytes),
            fmt_bytes(avail)
        )),
        _ => Ok(()),
    }
}

/// Appends at most `limit` bytes of `r` to `buf` (nothing more is consumed); returns how many.
pub fn read_at_most(r: &mut impl Read, buf: &mut Vec<u8>, limit: u64) -> std::io::Result<u64> {
    let start = buf.len();
    r.take(limit).read_to_end(buf)?;
    Ok((buf.len() - start) as u64)
}

/// The product of `dims`, or `None` on overflow.
pub fn checked_product(dims: impl IntoIterator<Item = u64>) -> Option<u64> {
    dims.into_iter().try_fold(1u64, |acc, d| acc.checked_mul(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_overflow_to_none() {
        assert_eq!(checked_product([2, 3, 4]), Some(24));
        assert_eq!(checked_product([1 << 62, 3, 32, 32]), None);
        assert_eq!(checked_product([1 << 62, 0]), Some(0));
    }

    #[test]
    fn bounded_reads_stop_at_the_limit() {
        let mut buf = Vec::new();
        let mut zeros = std::io::repeat(0);
        assert_eq!(read_at_most(&mut zeros, &mut buf, 1000).unwrap(), 1000);
        assert_eq!(buf.len(), 1000);
        let mut buf = Vec::new();
        let mut abc = &b"abcd"[..];
        assert_eq!(read_at_most(&mut abc, &mut buf, 3).unwrap(), 3);
        assert_eq!(read_at_most(&mut abc, &mut buf, 3).unwrap(), 1);
        assert_eq!(buf, b"abcd");
    }

    #[test]
    fn bytes_are_readable() {
        assert_eq!(fmt_bytes(800), "800 bytes");
        assert_eq!(fmt_bytes(3 << 29), "1.5 GiB");
        assert!(available_memory().is_some_and(|m| m > 0));
    }
}
