//! The rows of a `sync` mapping file (CSV with a header, or a JSON array),
//! validated whole before anything is sent.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// One validated row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Line in a CSV file, entry number in a JSON array.
    pub line: usize,
    /// The Amberflo customer.
    pub customer_id: String,
    /// The Stripe customer its usage is billed to.
    pub stripe_customer: String,
    /// The Amberflo meter.
    pub meter_api_name: String,
    /// The Stripe meter's event name.
    pub stripe_event_name: String,
}

impl Row {
    /// The workflow's inputs for this row over `[start_time, end_time)`.
    pub fn inputs(&self, start_time: String, end_time: String) -> crate::bindings::Inputs {
        crate::bindings::Inputs {
            customer_id: self.customer_id.clone(),
            meter_api_name: self.meter_api_name.clone(),
            stripe_customer: self.stripe_customer.clone(),
            stripe_event_name: self.stripe_event_name.clone(),
            usage_quantity: None,
            start_time: Some(start_time),
            end_time: Some(end_time),
        }
    }

    /// Frees the strings' spare capacity: a mapping may hold millions.
    fn shrink(&mut self) {
        for s in [
            &mut self.customer_id,
            &mut self.stripe_customer,
            &mut self.meter_api_name,
            &mut self.stripe_event_name,
        ] {
            s.shrink_to_fit();
        }
    }
}

/// One of `count` shards of a mapping: the rows whose stable hash of
/// (customer, meter, event name) falls in it, so a row always lands in the
/// same shard (and its journal), whoever runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 0-based.
    pub index: u64,
    /// How many shards share the mapping.
    pub count: u64,
}

impl Shard {
    /// `K/N`, with `K` from 0 to `N - 1`.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("--shard is K/N with K from 0 to N-1, not `{text}`");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u64 = k.trim().parse().map_err(|_| bad())?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count || count > 10_000 {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// In a Kubernetes Indexed Job: `JOB_COMPLETION_INDEX` of
    /// `USAGE_SYNC_SHARDS` (set to the Job's completions), when both are set.
    pub fn from_env() -> Result<Option<Shard>, String> {
        match (
            std::env::var("JOB_COMPLETION_INDEX"),
            std::env::var("USAGE_SYNC_SHARDS"),
        ) {
            (Ok(index), Ok(count)) => Shard::parse(&format!("{index}/{count}")).map(Some),
            _ => Ok(None),
        }
    }

    /// Whether `row` belongs to this shard: by its ledger (Stripe customer
    /// and event), so every source of a ledger is synced by one shard.
    pub fn holds(&self, row: &Row) -> bool {
        let digest = digest(&[&row.stripe_customer, &row.stripe_event_name]);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first) % self.count == self.index
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRow {
    customer_id: Option<String>,
    stripe_customer: Option<String>,
    meter_api_name: Option<String>,
    stripe_event_name: Option<String>,
}

/// Reads and validates the whole mapping; any bad row fails it all, by
/// line. Only the rows `keep` takes are held (a shard's own): the file is
/// streamed (CSV) and duplicates are found by a 128-bit digest of each row's
/// key, so a million-row mapping costs a shard little more than its rows.
pub fn read_mapping(
    path: &Path,
    default_meter: Option<&str>,
    default_event: Option<&str>,
) -> Result<Vec<Row>, String> {
    read_mapping_kept(path, default_meter, default_event, |_| true)
}

/// [`read_mapping`], holding only the rows `keep` takes.
pub fn read_mapping_kept(
    path: &Path,
    default_meter: Option<&str>,
    default_event: Option<&str>,
    keep: impl FnMut(&Row) -> bool,
) -> Result<Vec<Row>, String> {
    read(path, default_meter, default_event, keep, true)
}

/// [`read_mapping_kept`] again, for a part of a mapping it has read whole:
/// repeated rows are not looked for (a digest of every row, 50 MB a
/// million), the rest is checked as before.
pub fn read_mapping_part(
    path: &Path,
    default_meter: Option<&str>,
    default_event: Option<&str>,
    keep: impl FnMut(&Row) -> bool,
) -> Result<Vec<Row>, String> {
    read(path, default_meter, default_event, keep, false)
}

fn read(
    path: &Path,
    default_meter: Option<&str>,
    default_event: Option<&str>,
    mut keep: impl FnMut(&Row) -> bool,
    repeats: bool,
) -> Result<Vec<Row>, String> {
    let cannot =
        |e: &dyn std::fmt::Display| format!("cannot read the mapping {}: {e}", path.display());
    // The first few, and how many: a hostile file may be all bad rows.
    let mut errors = Vec::new();
    let mut more_errors = 0usize;
    let mut rows = Vec::new();
    let mut seen: HashMap<u128, usize> = HashMap::new();
    let mut any = false;
    let mut take = |line: usize, raw: RawRow| {
        any = true;
        let mut errors = |e: String| match errors.len() < 10 {
            true => errors.push(e),
            false => more_errors += 1,
        };
        let field = |name: &str, value: Option<String>, default: Option<&str>| {
            let value = value
                .filter(|v| !v.is_empty())
                .or(default.map(str::to_string));
            match value {
                None => Err(format!("line {line}: `{name}` is missing")),
                Some(v) if v.trim() != v || v.chars().any(char::is_control) => Err(format!(
                    "line {line}: `{name}` has spaces at the ends or control characters"
                )),
                Some(v) => Ok(v),
            }
        };
        let row = (|| {
            Ok::<_, String>(Row {
                line,
                customer_id: field("customerId", raw.customer_id, None)?,
                stripe_customer: field("stripeCustomer", raw.stripe_customer, None)?,
                meter_api_name: field("meterApiName", raw.meter_api_name, default_meter)?,
                stripe_event_name: field("stripeEventName", raw.stripe_event_name, default_event)?,
            })
        })();
        match row {
            Err(e) => errors(e),
            Ok(row) => match repeats
                .then(|| seen.insert(key_digest(&row), line))
                .flatten()
            {
                Some(first) => errors(format!(
                    "line {line}: repeats line {first} (same customerId, meterApiName and stripeEventName)"
                )),
                None if keep(&row) => {
                    let mut row = row;
                    row.shrink();
                    rows.push(row);
                }
                None => {}
            },
        }
    };
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        use std::io::BufRead;
        let file = std::fs::File::open(path).map_err(|e| cannot(&e))?;
        let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
        // A byte-order mark, as spreadsheets and Windows editors write one.
        if reader
            .fill_buf()
            .map_err(|e| cannot(&e))?
            .starts_with(b"\xef\xbb\xbf")
        {
            reader.consume(3);
        }
        // Streamed, an entry at a time: a million rows are never held as text.
        let mut json = serde_json::Deserializer::from_reader(reader);
        serde::de::DeserializeSeed::deserialize(EachRow(&mut take), &mut json)
            .and_then(|()| json.end())
            .map_err(|e| format!("the mapping {} is not valid: {e}", path.display()))?;
    } else {
        let file = std::fs::File::open(path).map_err(|e| cannot(&e))?;
        csv_rows(
            std::io::BufReader::new(crate::capped::LineCap::new(file, MAX_LINE)),
            &mut take,
        )?;
    }
    if !any {
        errors.push("the mapping has no rows".into());
    }
    if !errors.is_empty() {
        let more = more_errors;
        let mut message = errors.join("; ");
        if more > 0 {
            message.push_str(&format!("; and {more} more"));
        }
        return Err(format!(
            "the mapping {} has bad rows: {message}",
            path.display()
        ));
    }
    Ok(rows)
}

/// A JSON array's entries, each to the function as it is parsed, with its
/// 1-based number.
struct EachRow<'a, F>(&'a mut F);

impl<'de, F: FnMut(usize, RawRow)> serde::de::DeserializeSeed<'de> for EachRow<'_, F> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(usize, RawRow)> serde::de::Visitor<'de> for EachRow<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of rows")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut number = 0;
        while let Some(raw) = seq.next_element::<RawRow>()? {
            number += 1;
            (self.0)(number, raw);
        }
        Ok(())
    }
}

/// A row's key, digested: what tells a repeated row, in 16 bytes.
pub(crate) fn key_digest(row: &Row) -> u128 {
    let digest = digest(&[
        &row.customer_id,
        &row.meter_api_name,
        &row.stripe_event_name,
    ]);
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// SHA-256 of `parts`, each after its length: no two lists share one.
pub(crate) fn digest(parts: &[&str]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().into()
}

/// The longest line of a CSV mapping: a row is well under a kilobyte.
const MAX_LINE: usize = 64 << 10;

/// Each CSV record, as it is read, to `take` with its line.
fn csv_rows(input: impl std::io::Read, take: &mut impl FnMut(usize, RawRow)) -> Result<(), String> {
    // Headers are trimmed; values are not, so a padded id is refused as in
    // a JSON mapping rather than silently changed. The csv crate reads past
    // a byte-order mark.
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::Headers)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| format!("the mapping's header: {e}"))?
        .clone();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => return Err(format!("the mapping: {e}")),
        }
        let line = record.position().map_or(0, |p| p.line() as usize);
        let row: RawRow = record
            .deserialize(Some(&headers))
            .map_err(|e| format!("line {line}: {e}"))?;
        take(line, row);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_row_lands_in_exactly_one_shard() {
        let rows: Vec<Row> = (0..300)
            .map(|i| Row {
                line: i + 2,
                customer_id: format!("cust-{i}"),
                stripe_customer: format!("cus_{i}"),
                meter_api_name: "api-calls".into(),
                stripe_event_name: "api_calls".into(),
            })
            .collect();
        let shards: Vec<Shard> = (0..3).map(|k| Shard { index: k, count: 3 }).collect();
        let mut sizes = [0; 3];
        for row in &rows {
            let holding: Vec<usize> = (0..3).filter(|&k| shards[k].holds(row)).collect();
            assert_eq!(holding.len(), 1, "{row:?}");
            sizes[holding[0]] += 1;
        }
        assert!(sizes.iter().all(|&n| n > 60), "{sizes:?}");
        // Two sources of one ledger land in one shard.
        for (i, row) in rows.iter().enumerate() {
            let other = Row {
                customer_id: format!("other-{i}"),
                meter_api_name: "other-meter".into(),
                ..row.clone()
            };
            assert!(shards.iter().all(|s| s.holds(row) == s.holds(&other)));
        }
        assert_eq!(Shard::parse("2/3"), Ok(shards[2]));
        for bad in ["3/3", "1", "-1/3", "0/0", "a/b"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    use super::*;
    use std::path::PathBuf;

    fn mapping(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("usage-sync-mapping-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_line_past_the_cap_fails_the_read_wherever_the_reads_cut_it() {
        use super::MAX_LINE;
        use crate::capped::LineCap;
        use std::io::Read;
        let read_all = |text: &[u8], chunk: usize| {
            let mut reader = LineCap::new(text, MAX_LINE);
            let mut buf = vec![0; chunk];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        let short_lines = "customerId,stripeCustomer\n".repeat(100_000);
        let mut long = b"a,b\n".to_vec();
        long.extend(vec![b'x'; MAX_LINE + 1]);
        long.extend(b"\nc,d\n");
        for chunk in [7, 8 << 10, 1 << 20] {
            assert_eq!(read_all(short_lines.as_bytes(), chunk), Ok(()));
            let got = read_all(&long, chunk).unwrap_err();
            assert_eq!(got, "a line is over 65536 bytes");
        }
    }

    #[test]
    fn reads_csv_and_json_with_defaults() {
        let csv = mapping(
            "a.csv",
            "customerId , stripeCustomer,meterApiName\nacme,cus_1,calls\nglobex,cus_2,\n",
        );
        let rows = read_mapping(&csv, Some("default-meter"), Some("api_calls")).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[1].stripe_customer, "cus_2");
        assert_eq!(rows[1].meter_api_name, "default-meter");
        assert_eq!(rows[1].stripe_event_name, "api_calls");
        let json = mapping(
            "a.json",
            r#"[{"customerId":"acme","stripeCustomer":"cus_1","meterApiName":"m","stripeEventName":"e"}]"#,
        );
        assert_eq!(read_mapping(&json, None, None).unwrap()[0].line, 1);
    }

    #[test]
    fn a_byte_order_mark_is_read_past_and_padded_ids_are_refused_alike() {
        let csv = mapping("bom.csv", "\u{feff}customerId,stripeCustomer\nacme,cus_1\n");
        assert_eq!(read_mapping(&csv, Some("m"), Some("e")).unwrap().len(), 1);
        let json = mapping(
            "bom.json",
            "\u{feff}[{\"customerId\":\"acme\",\"stripeCustomer\":\"cus_1\"}]",
        );
        assert_eq!(read_mapping(&json, Some("m"), Some("e")).unwrap().len(), 1);
        let csv = mapping("pad.csv", "customerId,stripeCustomer\nacme, cus_1\n");
        let json = mapping(
            "pad.json",
            "[{\"customerId\":\"acme\",\"stripeCustomer\":\" cus_1\"}]",
        );
        for (path, line) in [(csv, 2), (json, 1)] {
            let err = read_mapping(&path, Some("m"), Some("e")).unwrap_err();
            assert!(
                err.contains(&format!(
                    "line {line}: `stripeCustomer` has spaces at the ends"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn bad_rows_are_reported_by_line() {
        let csv = mapping(
            "bad.csv",
            "customerId,stripeCustomer\nacme,cus_1\n,cus_2\nacme,cus_3\n",
        );
        let err = read_mapping(&csv, Some("m"), Some("e")).unwrap_err();
        assert!(err.contains("line 3: `customerId` is missing"), "{err}");
        assert!(err.contains("line 4: repeats line 2"), "{err}");
        let csv = mapping("nomet.csv", "customerId,stripeCustomer\nacme,cus_1\n");
        let err = read_mapping(&csv, None, Some("e")).unwrap_err();
        assert!(err.contains("line 2: `meterApiName` is missing"), "{err}");
        let csv = mapping("typo.csv", "customerID,stripeCustomer\nacme,cus_1\n");
        assert!(
            read_mapping(&csv, Some("m"), Some("e"))
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
