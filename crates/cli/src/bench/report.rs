//! The end of a run: the [`LoadReport`] as one JSON object (`--json`) or a short aligned
//! table, on stdout.

use std::io::Write;

use fullduplex_loadgen::LoadReport;

use crate::Failure;

/// Prints `report` on stdout: one JSON line with `json`, else the table.
pub fn print(report: &LoadReport, json: bool) -> Result<(), Failure> {
    let text = if json {
        report
            .json_line()
            .map_err(|e| Failure::new(format!("cannot encode the report: {e}")))?
    } else {
        report.table()
    };
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (`| head`) is not worth an error after the run.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    Ok(())
}
