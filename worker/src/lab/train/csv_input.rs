//! Reading a CSV into typed rows at the edge: the separator sniffed from the
//! header line (`,`, `;` or tab), decimal commas with `;` and tab, a column
//! named twice refused, unparseable cells counted rather than fatal, and
//! errors that name the column, the line and the value.

use std::io::Read;

use chrono::NaiveDate;
use serde::Serialize;
use trainyard_shared::{DataColumn, ModelType};

use crate::training::data::fingerprint_of;
use crate::training::RawRow;

/// Why a CSV could not be read into rows.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("cannot read {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed CSV at line {line}: {message}")]
    Malformed { line: u64, message: String },
    #[error("column `{column}` not found; the header has: {available}")]
    MissingColumn { column: String, available: String },
    #[error("column `{column}`, line {line}: `{value}` is not a date (expected YYYY-MM-DD)")]
    BadDate {
        column: String,
        line: u64,
        value: String,
    },
    #[error(
        "column `{column}`, line {line}: `{value}` is not a label (expected 0/1 or true/false)"
    )]
    BadLabel {
        column: String,
        line: u64,
        value: String,
    },
    #[error("column `{column}` has no numeric value in {rows} rows")]
    NoNumbers { column: String, rows: usize },
    #[error("the CSV has a header but no rows")]
    Empty,
    #[error("the CSV file is empty (no header row)")]
    EmptyFile,
    #[error(
        "column `{column}` appears more than once in the header (columns {positions}); \
         rename or remove the extra one so it is clear which to read"
    )]
    DuplicateColumn { column: String, positions: String },
    #[error("{0}")]
    Usage(String),
}

/// Which CSV columns feed which field of [`RawRow`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub date: String,
    pub value: String,
    pub model: ModelType,
    /// Anomaly features besides `value`: `co2e_kg`, then `grid_factor`.
    pub features: Vec<String>,
    pub label: Option<String>,
}

/// Rows read from a CSV, with what could not be parsed.
#[derive(Debug, Clone)]
pub struct CsvData {
    /// One per data line; `id` is the 1-based data row number.
    pub rows: Vec<RawRow>,
    /// Per data row, when a label column was given.
    pub labels: Option<Vec<bool>>,
    pub report: CsvReport,
}

/// What reading the CSV found (the pipeline's [`DataReport`] says what
/// preparation then did with the rows).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CsvReport {
    pub rows: usize,
    /// The field separator found in the header line (`,`, `;` or tab).
    pub delimiter: char,
    /// Whether numbers were read with a decimal comma (`1.234,5`), as
    /// semicolon- and tab-separated exports usually write them.
    pub decimal_comma: bool,
    /// Cells that were empty or not a number, per column (they become
    /// missing values that the pipeline rejects and counts).
    pub unparseable: Vec<(String, usize)>,
}

/// Parses a number cell: empty, `NA`, `null` or text become NaN (counted).
/// With `decimal_comma`, `1.234,5` is 1234.5 (a cell without a comma is
/// read as usual). Returns the number and whether a decimal comma was used.
fn parse_number(cell: &str, decimal_comma: bool) -> Option<(f64, bool)> {
    let t = cell.trim();
    let (text, comma) = if decimal_comma && t.contains(',') {
        (t.replace('.', "").replace(',', "."), true)
    } else {
        (t.to_string(), false)
    };
    text.parse::<f64>()
        .ok()
        .filter(|x| !x.is_nan())
        .map(|x| (x, comma))
}

/// The field separator of a CSV: whichever of `,`, `;` and tab occurs most
/// often (outside quotes) in its header line; `,` when none does.
fn sniff_delimiter(header_line: &[u8]) -> u8 {
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for &b in header_line {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let candidates = [b',', b';', b'\t'];
    let best = (0..3).max_by_key(|&i| (counts[i], std::cmp::Reverse(i)));
    match best {
        Some(i) if counts[i] > 0 => candidates[i],
        _ => b',',
    }
}

/// How a CSV error reads after "malformed CSV at line N: ", without the
/// record and line numbers the parser's own message repeats.
fn describe_csv_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields where the header has {expected_len}"),
        csv::ErrorKind::Io(io) => io.to_string(),
        _ => e.to_string(),
    }
}

/// Parses an ISO date, ignoring a time part (`2024-01-31 13:00:00`,
/// `2024-01-31T13:00:00Z`).
pub fn parse_date(cell: &str) -> Option<NaiveDate> {
    let t = cell.trim();
    let head = t.get(..10).unwrap_or(t);
    NaiveDate::parse_from_str(head, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(head, "%Y/%m/%d"))
        .ok()
        .filter(|_| matches!(t.as_bytes().get(10), None | Some(b' ' | b'T' | b't')))
}

fn parse_label(cell: &str) -> Option<bool> {
    match cell.trim().to_ascii_lowercase().as_str() {
        "1" | "1.0" | "true" | "yes" | "y" | "t" => Some(true),
        "0" | "0.0" | "false" | "no" | "n" | "f" | "" => Some(false),
        _ => None,
    }
}

/// Reads the rows `spec` asks for from CSV text.
///
/// The separator is sniffed from the header line (`,`, `;` or tab); with `;`
/// or tab, numbers may use a decimal comma. Cells are read as UTF-8 where
/// they are valid and lossily where not (a Latin-1 export reads the same),
/// and a leading byte-order mark is ignored.
pub fn read_rows(mut input: impl Read, spec: &ColumnSpec) -> Result<CsvData, CsvError> {
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|e| CsvError::Malformed {
            line: 0,
            message: e.to_string(),
        })?;
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(CsvError::EmptyFile);
    }
    let header_line = text
        .split(|b| *b == b'\n')
        .find(|l| !l.iter().all(u8::is_ascii_whitespace))
        .unwrap_or_default();
    let delimiter = sniff_delimiter(header_line);
    let decimal_comma_allowed = delimiter != b',';

    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .delimiter(delimiter)
        .from_reader(text);
    let malformed = |e: csv::Error| CsvError::Malformed {
        line: e.position().map(|p| p.line()).unwrap_or(0),
        message: describe_csv_error(&e),
    };
    let header: Vec<String> = reader
        .byte_headers()
        .map_err(malformed)?
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_string())
        .collect();
    let col = |name: &str| {
        let name = name.trim();
        let at: Vec<usize> = (0..header.len()).filter(|&i| header[i] == name).collect();
        match at.as_slice() {
            [i] => Ok(*i),
            [] => Err(CsvError::MissingColumn {
                column: name.to_string(),
                available: header.join(", "),
            }),
            [.., last] => Err(CsvError::DuplicateColumn {
                column: name.to_string(),
                positions: format!(
                    "{} and {}",
                    at[..at.len() - 1]
                        .iter()
                        .map(|i| (i + 1).to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    last + 1
                ),
            }),
        }
    };
    let date_i = col(&spec.date)?;
    let value_i = col(&spec.value)?;
    let feature_i = spec
        .features
        .iter()
        .map(|f| col(f))
        .collect::<Result<Vec<_>, _>>()?;
    let label_i = spec.label.as_deref().map(col).transpose()?;

    // Numeric columns in report order: value, then the features.
    let numeric: Vec<(String, usize)> = std::iter::once((spec.value.clone(), value_i))
        .chain(spec.features.iter().cloned().zip(feature_i.iter().copied()))
        .collect();
    let mut bad = vec![0usize; numeric.len()];
    let mut decimal_comma = false;
    let mut rows = Vec::new();
    let mut labels = label_i.map(|_| Vec::new());
    for (n, record) in reader.byte_records().enumerate() {
        let record = record.map_err(malformed)?;
        let line = record.position().map(|p| p.line()).unwrap_or(n as u64 + 2);
        let cell = |i: usize| String::from_utf8_lossy(record.get(i).unwrap_or_default());
        let date = parse_date(&cell(date_i)).ok_or_else(|| CsvError::BadDate {
            column: spec.date.clone(),
            line,
            value: cell(date_i).to_string(),
        })?;
        let mut nums = [f64::NAN; 3];
        for (k, (_, i)) in numeric.iter().enumerate() {
            match parse_number(&cell(*i), decimal_comma_allowed) {
                Some((x, comma)) => {
                    nums[k] = x;
                    decimal_comma |= comma;
                }
                None => bad[k] += 1,
            }
        }
        if let (Some(i), Some(labels)) = (label_i, labels.as_mut()) {
            let l = parse_label(&cell(i)).ok_or_else(|| CsvError::BadLabel {
                column: spec.label.clone().unwrap_or_default(),
                line,
                value: cell(i).to_string(),
            })?;
            labels.push(l);
        }
        // Identical lines are one record imported twice (see RawRow::fingerprint).
        let fingerprint = fingerprint_of(record.iter().map(Some));
        rows.push(to_raw_row(n as i64 + 1, date, nums, fingerprint, spec));
    }
    if rows.is_empty() {
        return Err(CsvError::Empty);
    }
    for (k, (name, _)) in numeric.iter().enumerate() {
        if bad[k] == rows.len() {
            return Err(CsvError::NoNumbers {
                column: name.clone(),
                rows: rows.len(),
            });
        }
    }
    Ok(CsvData {
        report: CsvReport {
            rows: rows.len(),
            delimiter: char::from(delimiter),
            decimal_comma,
            unparseable: numeric
                .iter()
                .zip(&bad)
                .filter(|(_, b)| **b > 0)
                .map(|((name, _), b)| (name.clone(), *b))
                .collect(),
        },
        rows,
        labels,
    })
}

/// `nums` is (value, feature 1, feature 2) as read. The value goes where the
/// model type reads its series from ([`ModelType::reads`], as for database
/// rows); a feature that was not asked for is the constant 1, which
/// standardizes to 0 and so plays no part.
fn to_raw_row(
    id: i64,
    date: NaiveDate,
    nums: [f64; 3],
    fingerprint: u64,
    spec: &ColumnSpec,
) -> RawRow {
    let [value, f1, f2] = nums;
    match spec.model.reads() {
        DataColumn::EnergyValue => RawRow {
            id: Some(id),
            date,
            value,
            co2e_kg: f64::NAN,
            grid_factor: f64::NAN,
            fingerprint,
        },
        DataColumn::Co2eKg => RawRow {
            id: Some(id),
            date,
            value: f64::NAN,
            co2e_kg: value,
            grid_factor: f64::NAN,
            fingerprint,
        },
        DataColumn::EveryRow => RawRow {
            id: Some(id),
            date,
            value,
            co2e_kg: if spec.features.is_empty() { 1.0 } else { f1 },
            grid_factor: if spec.features.len() < 2 { 1.0 } else { f2 },
            fingerprint,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec(model: ModelType) -> ColumnSpec {
        ColumnSpec {
            date: "day".into(),
            value: "kwh".into(),
            model,
            features: Vec::new(),
            label: None,
        }
    }

    #[test]
    fn a_missing_column_is_named_with_the_columns_that_exist() {
        let err = read_rows(
            "date,kwh\n2024-01-01,1\n".as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CsvError::MissingColumn { .. }), "{msg}");
        assert!(msg.contains("`day`") && msg.contains("date, kwh"), "{msg}");
    }

    #[test]
    fn a_column_named_twice_is_refused_naming_it() {
        let err = read_rows(
            "day,kwh,kwh\n2024-01-01,1,2\n".as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, CsvError::DuplicateColumn { ref column, .. } if column == "kwh"),
            "{msg}"
        );
        assert!(
            msg.contains("`kwh`") && msg.contains("columns 2 and 3"),
            "{msg}"
        );
        // A repeated column that is not read is harmless.
        let data = read_rows(
            "day,kwh,note,note\n2024-01-01,1,a,b\n".as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap();
        assert_eq!(data.rows[0].value, 1.0);
    }

    #[test]
    fn a_semicolon_csv_with_decimal_commas_is_read() {
        let data = read_rows(
            "day;kwh\n2024-01-01;1,5\n2024-01-02;1.234,25\n2024-01-03;7\n".as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap();
        let values: Vec<f64> = data.rows.iter().map(|r| r.value).collect();
        assert_eq!(values, vec![1.5, 1234.25, 7.0]);
        assert_eq!(data.report.delimiter, ';');
        assert!(data.report.decimal_comma);
        // A comma CSV keeps reading `1.5` as it always did.
        let data = read_rows(
            "day,kwh\n2024-01-01,1.5\n".as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap();
        assert_eq!(data.rows[0].value, 1.5);
        assert_eq!(data.report.delimiter, ',');
        assert!(!data.report.decimal_comma);
    }

    #[test]
    fn an_empty_file_is_called_empty() {
        for input in ["", "\n", "  \r\n"] {
            let err = read_rows(input.as_bytes(), &spec(ModelType::EnergyForecast)).unwrap_err();
            assert!(matches!(err, CsvError::EmptyFile), "{input:?}: {err}");
            assert_eq!(err.to_string(), "the CSV file is empty (no header row)");
        }
    }

    #[test]
    fn identical_lines_are_one_record_and_differing_lines_are_not() {
        let data = read_rows(
            "day,kwh,meter\n2024-01-01,1,a\n2024-01-01,1,a\n2024-01-01,1,b\n".as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap();
        let f: Vec<u64> = data.rows.iter().map(|r| r.fingerprint).collect();
        assert_eq!(f[0], f[1]);
        assert_ne!(f[0], f[2]);
    }

    #[test]
    fn an_unparseable_date_names_the_column_the_line_and_the_value() {
        let err = read_rows(
            "day,kwh\n2024-01-01,1\n01.02.2024,2\n".as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`day`") && msg.contains("line 3") && msg.contains("01.02.2024"),
            "{msg}"
        );
    }

    #[test]
    fn dates_may_carry_a_time_and_short_dates_do_not_panic() {
        let d = NaiveDate::from_ymd_opt(2024, 1, 4).unwrap();
        assert_eq!(parse_date("2024-01-04"), Some(d));
        assert_eq!(parse_date("2024-01-04T13:00:00Z"), Some(d));
        assert_eq!(parse_date("2024/01/04"), Some(d));
        assert_eq!(parse_date("2024-01-04x"), None);
        let _ = parse_date("2024-1-4");
        assert_eq!(parse_date("é"), None);
    }

    #[test]
    fn bad_values_are_counted_not_fatal_and_become_missing() {
        let data = read_rows(
            "day,kwh\n2024-01-01,1.5\n2024-01-02,\n2024-01-03,abc\n2024-01-04 13:00:00,2\n"
                .as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap();
        assert_eq!(data.report.rows, 4);
        assert_eq!(data.report.unparseable, vec![("kwh".to_string(), 2)]);
        assert!(data.rows[1].value.is_nan() && data.rows[2].value.is_nan());
        assert_eq!(
            data.rows[3].date,
            NaiveDate::from_ymd_opt(2024, 1, 4).unwrap()
        );
        assert_eq!(data.rows[3].id, Some(4));
    }

    #[test]
    fn a_column_without_any_number_is_an_error_naming_it() {
        let err = read_rows(
            "day,kwh\n2024-01-01,x\n2024-01-02,\n".as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap_err();
        assert!(
            matches!(err, CsvError::NoNumbers { ref column, rows: 2 } if column == "kwh"),
            "{err}"
        );
    }

    #[test]
    fn emissions_go_to_co2e_and_anomaly_features_fill_in_order() {
        let e = read_rows(
            "day,kwh\n2024-01-01,3\n".as_bytes(),
            &spec(ModelType::EmissionsForecast),
        )
        .unwrap();
        assert_eq!(e.rows[0].co2e_kg, 3.0);
        assert!(e.rows[0].value.is_nan());
        let mut s = spec(ModelType::AnomalyDetection);
        s.features = vec!["co2".into()];
        s.label = Some("bad".into());
        let a = read_rows(
            "day,kwh,co2,bad\n2024-01-01,3,7,1\n2024-01-02,4,8,false\n".as_bytes(),
            &s,
        )
        .unwrap();
        assert_eq!(
            (a.rows[0].value, a.rows[0].co2e_kg, a.rows[0].grid_factor),
            (3.0, 7.0, 1.0)
        );
        assert_eq!(a.labels, Some(vec![true, false]));
    }
}
