//! JSON Lines, read tolerantly: blank lines ignored, a last line cut short (a recorder
//! killed mid-write) skipped and counted, any other line that is not a JSON object an
//! error naming the file and line.

use serde_json::Value;

use crate::{Format, ImportError, Report, Source};

/// The JSON objects of `source`'s lines, each with its line number (from 1).
pub(crate) fn objects(
    source: &Source,
    format: Format,
    report: &mut Report,
) -> Result<Vec<(usize, Value)>, ImportError> {
    report.bytes += source.bytes.len() as u64;
    let text = String::from_utf8_lossy(&source.bytes);
    let lines: Vec<&str> = text.lines().collect();
    let last = lines.iter().rposition(|l| !l.trim().is_empty());
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        report.lines += 1;
        match serde_json::from_str::<Value>(line) {
            Ok(value @ Value::Object(_)) => out.push((i + 1, value)),
            Ok(_) => {
                return Err(ImportError::Line {
                    file: source.name.clone(),
                    line: i + 1,
                    format,
                    what: "a JSON value that is not an object".into(),
                });
            }
            // cut short while being written: the recording up to it stands
            Err(e) if Some(i) == last && e.is_eof() => report.skip("truncated last line"),
            Err(e) => {
                return Err(ImportError::Line {
                    file: source.name.clone(),
                    line: i + 1,
                    format,
                    what: e.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// The string at `pointer` in `value` (empty when absent).
pub(crate) fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}
