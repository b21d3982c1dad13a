//! Options chosen by name (a method, a score, a backend): one table of names per enum, which
//! the command line, the Python package and the server all parse with, so that no front end
//! keeps its own list.

/// An enum whose every variant has one name.
pub trait Named: Sized + Copy + 'static {
    /// Every variant, in the order they are listed to users.
    const ALL: &'static [Self];

    /// Its name in options, file names and records.
    fn name(self) -> &'static str;

    /// What it is, in one line (shown in `--help`).
    fn about(self) -> &'static str {
        ""
    }

    /// The variant called `s`, or an error listing every name.
    fn parse(s: &str) -> crate::Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                crate::Error::BadOption(format!(
                    "unknown {} '{s}'; one of: {}",
                    Self::WHAT,
                    Self::ALL
                        .iter()
                        .map(|v| v.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// What a value is called in messages ("method", "backend").
    const WHAT: &'static str;
}
