//! Result rows as CSV (RFC 4180): a header of the rows' top-level keys in first-seen
//! order (a first pass over the rows collects them, at most `MAX_CSV_COLUMNS_COUNT`),
//! then one line per row. Strings are written as they are, numbers and booleans as their
//! JSON text, nested arrays and objects as compact JSON, null and missing keys as empty
//! fields. Fields holding a comma, a quote, CR or LF are quoted, quotes doubled; lines
//! end with CRLF.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use crate::limits::MAX_CSV_COLUMNS_COUNT;

/// The columns of a CSV: fixed leading ones (a hunt's `client_id`, `flow_id`), then the
/// rows' keys as first seen. Invariant: `index` maps each row key to its column.
#[derive(Debug, Default)]
pub struct Columns {
    leading: Vec<String>,
    keys: Vec<String>,
    index: HashMap<String, usize>,
    /// Keys seen past the cap (left out of the CSV).
    dropped_count: u64,
}

impl Columns {
    pub fn new(leading: &[&str]) -> Self {
        Self {
            leading: leading.iter().map(|s| s.to_string()).collect(),
            ..Self::default()
        }
    }

    /// Adds the keys of `row` (a JSON object) not seen yet. A row that is not an object
    /// adds nothing (stored rows always are).
    pub fn observe(&mut self, row: &[u8]) {
        let mut de = serde_json::Deserializer::from_slice(row);
        let Ok(KeysOf(keys)) = de::Deserialize::deserialize(&mut de) else {
            return;
        };
        for key in keys {
            if self.index.contains_key(&key) {
                continue;
            }
            if self.keys.len() >= MAX_CSV_COLUMNS_COUNT {
                self.dropped_count += 1;
                continue;
            }
            self.index.insert(key.clone(), self.keys.len());
            self.keys.push(key);
        }
    }

    /// Row keys left out because of `MAX_CSV_COLUMNS_COUNT`.
    pub fn dropped_count(&self) -> u64 {
        self.dropped_count
    }

    /// The header line.
    pub fn header(&self, out: &mut Vec<u8>) {
        let names = self.leading.iter().chain(&self.keys);
        for (i, name) in names.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            field(name, out);
        }
        out.extend_from_slice(b"\r\n");
    }

    /// One row's line: `leading` values first (as many as leading columns), then the
    /// row's values under their keys' columns. A row that is not an object gives a line
    /// of empty fields after the leading ones.
    pub fn line(&self, leading: &[&str], row: &[u8], out: &mut Vec<u8>) {
        debug_assert_eq!(leading.len(), self.leading.len());
        let mut cells: Vec<Option<Value>> = vec![None; self.keys.len()];
        if let Ok(OrderedRow(entries)) = serde_json::from_slice::<OrderedRow>(row) {
            for (key, value) in entries {
                if let Some(&i) = self.index.get(&key) {
                    cells[i] = Some(value);
                }
            }
        }
        let mut first = true;
        for value in leading {
            if !first {
                out.push(b',');
            }
            first = false;
            field(value, out);
        }
        for cell in &cells {
            if !first {
                out.push(b',');
            }
            first = false;
            match cell {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => field(s, out),
                Some(other) => field(&other.to_string(), out),
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes one field, quoted when RFC 4180 needs it.
fn field(text: &str, out: &mut Vec<u8>) {
    if !text.contains([',', '"', '\r', '\n']) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    out.push(b'"');
    for part in text.split('"').enumerate() {
        if part.0 > 0 {
            out.extend_from_slice(b"\"\"");
        }
        out.extend_from_slice(part.1.as_bytes());
    }
    out.push(b'"');
}

/// The keys of a JSON object in document order (values skipped, not built).
struct KeysOf(Vec<String>);

impl<'de> de::Deserialize<'de> for KeysOf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeysOf;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeysOf, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(KeysOf(keys))
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON object's entries in document order (serde_json's own map sorts its keys).
struct OrderedRow(Vec<(String, Value)>);

impl<'de> de::Deserialize<'de> for OrderedRow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedRow;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedRow, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(OrderedRow(entries))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(leading: &[&str], rows: &[&str]) -> String {
        let mut columns = Columns::new(leading);
        rows.iter().for_each(|r| columns.observe(r.as_bytes()));
        let mut out = Vec::new();
        columns.header(&mut out);
        let values: Vec<&str> = leading.iter().map(|_| "v").collect();
        rows.iter()
            .for_each(|r| columns.line(&values, r.as_bytes(), &mut out));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn columns_in_first_seen_order_with_rfc4180_quoting() {
        let got = csv(
            &[],
            &[
                r#"{"z":"a,b","a":"say \"hi\""}"#,
                r#"{"a":"line1\nline2","n":1.5,"nested":{"k":[1,2]},"t":true,"nul":null}"#,
                r#"{"z":"ünïcødé ✓"}"#,
            ],
        );
        assert_eq!(
            got,
            "z,a,n,nested,t,nul\r\n\
             \"a,b\",\"say \"\"hi\"\"\",,,,\r\n\
             ,\"line1\nline2\",1.5,\"{\"\"k\"\":[1,2]}\",true,\r\n\
             ünïcødé ✓,,,,,\r\n"
        );
    }

    #[test]
    fn leading_columns_come_first_and_the_cap_holds() {
        assert_eq!(
            csv(&["client_id"], &[r#"{"x":1}"#]),
            "client_id,x\r\nv,1\r\n"
        );
        let wide: String = format!(
            "{{{}}}",
            (0..MAX_CSV_COLUMNS_COUNT + 5)
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut columns = Columns::new(&[]);
        columns.observe(wide.as_bytes());
        assert_eq!(columns.keys.len(), MAX_CSV_COLUMNS_COUNT);
        assert_eq!(columns.dropped_count(), 5);
    }
}
