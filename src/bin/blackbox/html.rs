//! `blackbox html`.
use std::io::Write;
use std::path::Path;
pub(crate) fn run(_path: &Path, _out: &mut dyn Write) -> Result<(), crate::Failure> {
    Ok(())
}
