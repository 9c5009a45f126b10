//! Goal: the single-pass scanner decides every batch as serde_json does when a reader
//! parses its rows (a UTF-8 pass, then `from_slice::<Value>` per row, kept as
//! `serde_reference`): the same batches accepted with the same index, the same batches
//! refused, at the first failing row. Method: proptest over arbitrary bytes and over JSON
//! rows (whitespace variants, escapes, numbers at the edges, deep nesting) mutated by
//! truncation, flipped bytes, inserted fragments (control characters, bad escapes, lone
//! surrogates, broken UTF-8, stray brackets, `\n`) and trailing garbage; plus tables of
//! the grammar's corners.

use proptest::prelude::*;

use super::*;

/// The project's property-test settings (`limits::property_test_config`).
fn config() -> ProptestConfig {
    crate::limits::property_test_config()
}

/// The reason's kind, without column or detail (the scanner words those its own way).
fn kind(reason: &JsonlReason) -> std::mem::Discriminant<JsonlReason> {
    std::mem::discriminant(reason)
}

/// Checks `validate_and_index` against the reference on `batch`.
fn agrees_with_serde(batch: &[u8]) -> Result<(), TestCaseError> {
    let (mut new_index, mut old_index) = (b"prior".to_vec(), b"prior".to_vec());
    let new = validate_and_index(batch, 1000, &mut new_index);
    let old = serde_reference(batch, 1000, &mut old_index);
    let shown = String::from_utf8_lossy(batch);
    match (&new, &old) {
        (Ok(new_rows), Ok(old_rows)) => {
            prop_assert_eq!(new_rows, old_rows, "{:?}", shown);
            prop_assert_eq!(&new_index, &old_index, "{:?}", shown);
        }
        (Err(new_err), Err(old_err)) => {
            prop_assert_eq!(&new_index, b"prior", "a refused batch leaves the index");
            first_failing_row_is_reported(batch, new_err, old_err)?;
        }
        _ => {
            return Err(TestCaseError::fail(format!(
                "scanner {new:?}, serde {old:?} on {shown:?}"
            )))
        }
    }
    Ok(())
}

/// The scanner reports the first row that is not UTF-8 or that serde_json refuses, with
/// one of those reasons; a grammar error's column points into the row.
fn first_failing_row_is_reported(
    batch: &[u8],
    new_err: &JsonlError,
    old_err: &JsonlError,
) -> Result<(), TestCaseError> {
    let shown = String::from_utf8_lossy(batch);
    if matches!(
        old_err.reason,
        JsonlReason::EmptyBatch | JsonlReason::MissingFinalNewline
    ) {
        prop_assert_eq!(new_err, old_err, "{:?}", shown);
        return Ok(());
    }
    let rows = batch[..batch.len() - 1].split(|&b| b == b'\n');
    for (row, line) in rows.zip(1u64..) {
        let not_utf8 = std::str::from_utf8(row).is_err();
        let serde = reference::check_row(row).err();
        if !not_utf8 && serde.is_none() {
            continue;
        }
        prop_assert_eq!(
            new_err.line,
            line,
            "{} vs {:?} on {:?}",
            new_err,
            serde,
            shown
        );
        let utf8_ok = not_utf8 && new_err.reason == JsonlReason::InvalidUtf8;
        let serde_ok = serde
            .as_ref()
            .is_some_and(|r| kind(r) == kind(&new_err.reason));
        prop_assert!(
            utf8_ok || serde_ok,
            "{} vs {:?} on {:?}",
            new_err,
            serde,
            shown
        );
        if let JsonlReason::InvalidJson { column, .. } = new_err.reason {
            prop_assert!(
                (1..=row.len()).contains(&column),
                "{} in {:?}",
                new_err,
                shown
            );
        }
        return Ok(());
    }
    Err(TestCaseError::fail(format!(
        "no failing row, yet {new_err} on {shown:?}"
    )))
}

// ---- Strategies -----------------------------------------------------------------------

/// Pieces worth putting anywhere: each breaks (or, in the right place, completes) a row.
const FRAGMENTS: &[&[u8]] = &[
    b"\0",
    b"\x01",
    b"\x1f",
    b"\x7f",
    b"\t",
    b"\r",
    b" ",
    b"\n",
    b"\"",
    b"\\",
    b"\\u",
    b"\\ud800",
    b"\\udc00",
    b"\\uDBFF\\uDFFF",
    b"\\x",
    b"\\u12g4",
    b"\\u00",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"{}",
    b"[]",
    b"-",
    b"0",
    b"01",
    b"-0",
    b"1.",
    b".5",
    b"1e",
    b"e+",
    b"E-",
    b"1e999999",
    b"-0.0e-0",
    b"18446744073709551616",
    b"true",
    b"nul",
    b"fals",
    b"NaN",
    b"Infinity",
    b"+1",
    b"\xc3",
    b"\xff",
    b"\xed\xa0\x80",
    b"\xf0\x9f\x98",
    b"\xc0\xaf",
    "é".as_bytes(),
    "日本".as_bytes(),
    "😀".as_bytes(),
    b"\"k\":",
    b"{\"a\":1}",
];

fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(FRAGMENTS).prop_map(<[u8]>::to_vec)
}

/// A JSON tree, with string contents and numbers kept as the bytes to write.
#[derive(Debug, Clone)]
enum Tree {
    Literal(&'static str),
    Number(String),
    Text(Vec<u8>),
    List(Vec<Tree>),
    Object(Vec<(Vec<u8>, Tree)>),
}

/// String contents (between the quotes): plain text, any Unicode, and every escape,
/// including paired surrogates and lone ones (which a `Value` parse refuses).
fn text() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        "[a-zA-Z0-9 /:._-]{0,12}".prop_map(String::into_bytes),
        any::<String>().prop_map(|s| {
            let quoted = serde_json::to_string(&s).expect("strings serialise");
            quoted.as_bytes()[1..quoted.len() - 1].to_vec()
        }),
        prop::sample::select(
            &[
                "\\n",
                "\\\"",
                "\\\\",
                "\\/",
                "\\b",
                "\\f",
                "\\r",
                "\\t",
                "\\u00e9",
                "\\u00E9",
                "\\uD83D\\uDE00",
                "\\ud800",
                "\\udc00",
                "\\uDBFF\\u0041",
                "\\uDBFF\\uDFFF",
                "\\uD800\\uD800",
                "\\uD800\\n",
                "\\uD800x",
                "\\uFFFF",
                "\\u0000",
                "é",
                "日本",
                "\u{7f}",
            ][..]
        )
        .prop_map(|s| s.as_bytes().to_vec()),
    ];
    prop::collection::vec(piece, 0..4).prop_map(|pieces| pieces.concat())
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,6})?",
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        prop::sample::select(
            &[
                "18446744073709551615",
                "18446744073709551616",
                "-9223372036854775809",
                "1e400",
                "-1e-400",
                "0e0",
                "1E+0",
                "123456789012345678901234567890",
                "4.9e-324",
                "1.7976931348623157e308",
                "1.7976931348623159e308",
                "1.8e308",
                "-1.8e308",
                "0e99999999999999999999",
                "1e99999999999999999999",
                "1e-99999999999999999999",
            ][..]
        )
        .prop_map(str::to_string),
    ]
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        prop::sample::select(&["true", "false", "null"][..]).prop_map(Tree::Literal),
        number().prop_map(Tree::Number),
        text().prop_map(Tree::Text),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Tree::List),
            prop::collection::vec((text(), inner), 0..6).prop_map(Tree::Object),
        ]
    })
}

/// Writes `tree`, putting whitespace from `spaces` (cycled) between tokens.
fn write(tree: &Tree, spaces: &[&[u8]], turn: &mut usize, out: &mut Vec<u8>) {
    let space = |turn: &mut usize, out: &mut Vec<u8>| {
        out.extend_from_slice(spaces[*turn % spaces.len()]);
        *turn += 1;
    };
    match tree {
        Tree::Literal(word) => out.extend_from_slice(word.as_bytes()),
        Tree::Number(n) => out.extend_from_slice(n.as_bytes()),
        Tree::Text(t) => {
            out.push(b'"');
            out.extend_from_slice(t);
            out.push(b'"');
        }
        Tree::List(items) => {
            out.push(b'[');
            for (k, item) in items.iter().enumerate() {
                space(turn, out);
                if k > 0 {
                    out.push(b',');
                    space(turn, out);
                }
                write(item, spaces, turn, out);
            }
            space(turn, out);
            out.push(b']');
        }
        Tree::Object(members) => {
            out.push(b'{');
            for (k, (key, value)) in members.iter().enumerate() {
                space(turn, out);
                if k > 0 {
                    out.push(b',');
                    space(turn, out);
                }
                write(&Tree::Text(key.clone()), spaces, turn, out);
                space(turn, out);
                out.push(b':');
                space(turn, out);
                write(value, spaces, turn, out);
            }
            space(turn, out);
            out.push(b'}');
        }
    }
}

/// Whitespace between tokens: mostly none (as agents write rows), sometimes every kind
/// serde_json allows inside a line.
fn spaces() -> impl Strategy<Value = Vec<&'static [u8]>> {
    const SPACES: &[&[u8]] = &[b"", b"", b"", b" ", b"\t", b"\r", b" \r\t "];
    prop::collection::vec(prop::sample::select(SPACES), 1..8)
}

/// A well-formed value on a row: an object (mostly) or another value, with whitespace.
fn valid_row() -> impl Strategy<Value = Vec<u8>> {
    let top = prop_oneof![
        6 => prop::collection::vec((text(), tree()), 0..8).prop_map(Tree::Object),
        1 => tree(),
    ];
    (top, spaces()).prop_map(|(tree, spaces)| {
        let mut out = Vec::new();
        let mut turn = 0;
        out.extend_from_slice(spaces[spaces.len() - 1]);
        write(&tree, &spaces, &mut turn, &mut out);
        out.extend_from_slice(spaces[0]);
        out
    })
}

/// A row nested `depth` containers deep, around serde_json's 128-level recursion limit
/// and far past it; `break_at` removes one closing bracket (or none).
fn deep_row() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(any::<bool>(), 0..300),
        tree(),
        any::<Option<prop::sample::Index>>(),
    )
        .prop_map(|(kinds, inner, break_at)| {
            let mut out = b"{\"a\":".to_vec();
            for &object in &kinds {
                out.extend_from_slice(if object { b"{\"k\":" } else { b"[" });
            }
            write(&inner, &[b""], &mut 0, &mut out);
            let skip = break_at.map(|at| at.index(kinds.len().max(1)));
            for (k, &object) in kinds.iter().enumerate().rev() {
                if Some(k) != skip {
                    out.push(if object { b'}' } else { b']' });
                }
            }
            out.push(b'}');
            out
        })
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(prop::sample::Index),
    Replace(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Remove(prop::sample::Index),
    Repeat(prop::sample::Index, prop::sample::Index),
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    use prop::sample::Index;
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::Replace(at, b)),
        (any::<Index>(), fragment()).prop_map(|(at, f)| Mutation::Insert(at, f)),
        any::<Index>().prop_map(Mutation::Remove),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Repeat(a, b)),
        fragment().prop_map(Mutation::Append),
    ]
}

fn mutate(mut row: Vec<u8>, mutation: &Mutation) -> Vec<u8> {
    let len = row.len();
    let at = |i: &prop::sample::Index| i.index(len + 1);
    match mutation {
        Mutation::Truncate(i) => row.truncate(at(i)),
        Mutation::Replace(i, b) if len > 0 => row[i.index(len)] = *b,
        Mutation::Insert(i, f) => {
            let at = at(i);
            row.splice(at..at, f.iter().copied());
        }
        Mutation::Remove(i) if len > 0 => {
            row.remove(i.index(len));
        }
        Mutation::Repeat(a, b) => {
            let (a, b) = (at(a), at(b));
            let piece = row[a.min(b)..a.max(b)].to_vec();
            row.splice(a.max(b)..a.max(b), piece);
        }
        Mutation::Append(f) => row.extend_from_slice(f),
        _ => {}
    }
    row
}

/// A row as an agent might send it, right or wrong.
fn row() -> impl Strategy<Value = Vec<u8>> {
    let base = prop_oneof![
        5 => valid_row(),
        1 => deep_row(),
        1 => prop::collection::vec(any::<u8>(), 0..48),
        1 => prop::collection::vec(fragment(), 0..12).prop_map(|f| f.concat()),
    ];
    (base, prop::collection::vec(mutation(), 0..3))
        .prop_map(|(row, mutations)| mutations.iter().fold(row, mutate))
}

/// Rows joined by `\n` (sometimes `\r\n`, sometimes an empty line), the last newline
/// sometimes missing.
fn batch() -> impl Strategy<Value = Vec<u8>> {
    const ENDS: &[&[u8]] = &[b"\n", b"\n", b"\n", b"\r\n", b"\n\n"];
    let end = prop::sample::select(ENDS);
    (
        prop::collection::vec((row(), end), 0..6),
        prop::bool::weighted(0.95),
    )
        .prop_map(|(rows, final_newline)| {
            let mut out: Vec<u8> = rows
                .into_iter()
                .flat_map(|(row, end)| [row, end.to_vec()])
                .flatten()
                .collect();
            if !final_newline && out.last() == Some(&b'\n') {
                out.pop();
            }
            out
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn batches_of_rows_are_decided_as_serde_json_decided_them(batch in batch()) {
        agrees_with_serde(&batch)?;
    }

    #[test]
    fn well_formed_rows_are_decided_as_serde_json_decided_them(
        rows in prop::collection::vec(valid_row(), 1..8),
    ) {
        let batch: Vec<u8> = rows.iter().flat_map(|r| [&r[..], b"\n"]).flatten().copied().collect();
        agrees_with_serde(&batch)?;
    }

    #[test]
    fn batches_of_any_bytes_are_decided_as_serde_json_decided_them(
        batch in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        agrees_with_serde(&batch)?;
        let mut with_newline = batch;
        with_newline.push(b'\n');
        agrees_with_serde(&with_newline)?;
    }
}

// ---- Tables ---------------------------------------------------------------------------

/// Rows on both sides of each grammar rule (after JSONTestSuite's y_/n_ cases), checked
/// against the reference, with the expected verdict spelled out so a change in serde_json
/// would show here too.
#[test]
fn grammar_corners_match_serde_json() {
    let accepted: &[&[u8]] = &[
        b"{}",
        b" \t\r{ \t\r} \t\r",
        b"{\"\":0}",
        b"{\"a\":-0}",
        b"{\"a\":-0.0e-0}",
        b"{\"a\":1E+2}",
        b"{\"a\":1e-2}",
        b"{\"a\":123456789012345678901234567890}",
        b"{\"a\":[]}",
        b"{\"a\":[[],{}]}",
        b"{\"a\":[true,false,null]}",
        b"{\"a\":\"\\u0000\\uFFFF\\uabcd\"}",
        b"{\"a\":\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"}",
        b"{\"a\":\"\x7f\"}",
        "{\"日本\":\"😀 é\"}".as_bytes(),
        b"{\"a\":1,\"a\":2}",
    ];
    let refused: &[&[u8]] = &[
        b"{\"a\":\"\\udc00\\ud800\"}",
        b"{\"a\":\"\\ud800\"}",
        b"{\"a\":1e400}",
        b"{",
        b"{\"a\"",
        b"{\"a\":",
        b"{\"a\":1",
        b"{\"a\":1,}",
        b"{,}",
        b"{\"a\":[1,]}",
        b"{\"a\":[,1]}",
        b"{\"a\":[1 2]}",
        b"{\"a\" 1}",
        b"{a:1}",
        b"{1:1}",
        b"{\"a\":01}",
        b"{\"a\":-}",
        b"{\"a\":-01}",
        b"{\"a\":1.}",
        b"{\"a\":.1}",
        b"{\"a\":1.e1}",
        b"{\"a\":1e}",
        b"{\"a\":1e+}",
        b"{\"a\":+1}",
        b"{\"a\":0x1}",
        b"{\"a\":1.5.3}",
        b"{\"a\":NaN}",
        b"{\"a\":Infinity}",
        b"{\"a\":tru}",
        b"{\"a\":True}",
        b"{\"a\":nulll}",
        b"{\"a\":\"\\u12\"}",
        b"{\"a\":\"\\u12g4\"}",
        b"{\"a\":\"\\U0041\"}",
        b"{\"a\":\"\\x41\"}",
        b"{\"a\":\"\\\"}",
        b"{\"a\":\"\x00\"}",
        b"{\"a\":\"\x1f\"}",
        b"{\"a\":\"\t\"}",
        b"{\"a\":'x'}",
        b"{\"a\":1}}",
        b"{\"a\":[}",
        b"{\"a\":{]}",
        b"{}{}",
        b"{} x",
        b"{}\x0c",
        b"\x0c{}",
        b"\xef\xbb\xbf{}",
        b"{\"a\":1}\0",
        b"{\"a\":\"\xff\"}",
        b"{\"a\":\"\xed\xa0\x80\"}",
        b"{\"a\":\"\xc0\xaf\"}",
        b"{\"a\":\"\xf0\x9f\x98\"}",
        b"{\"a\":\xc3\xa9}",
        b"[]",
        b"\"s\"",
        b"",
    ];
    for (rows, accept) in [(accepted, true), (refused, false)] {
        for row in rows {
            let mut batch = row.to_vec();
            batch.push(b'\n');
            let mut index = Vec::new();
            let verdict = validate_and_index(&batch, 0, &mut index);
            assert_eq!(
                verdict.is_ok(),
                accept,
                "{verdict:?} for {:?}",
                String::from_utf8_lossy(row)
            );
            agrees_with_serde(&batch).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Goal: the rows a reader building a `serde_json::Value` would refuse are refused at
/// ingest, with serde_json's wording, and the limits sit where serde_json's do: 127
/// containers open at once pass and 128 do not; the largest f64 passes and a number
/// rounding past it does not; a surrogate pair passes and a lone surrogate does not.
#[test]
fn rows_a_value_parse_would_refuse_are_refused() {
    let nested = |open: usize| {
        // The row's own object is one of the `open` containers.
        format!("{{\"a\":{}{}}}", "[".repeat(open - 1), "]".repeat(open - 1))
    };
    let (deepest, too_deep) = (nested(127), nested(128));
    let refused: [(&[u8], &str); 7] = [
        (too_deep.as_bytes(), "recursion limit exceeded"),
        (b"{\"a\":\"\\ud800\"}", "unexpected end of hex escape"),
        (
            b"{\"a\":\"\\udc00x\"}",
            "lone leading surrogate in hex escape",
        ),
        (
            b"{\"\\ud800\\ud800\":1}",
            "lone leading surrogate in hex escape",
        ),
        (b"{\"a\":1e400}", "number out of range"),
        (b"{\"a\":-1.8e308}", "number out of range"),
        (b"{\"a\":1e99999999999999999999}", "number out of range"),
    ];
    for (row, detail) in refused {
        assert!(serde_json::from_slice::<serde_json::Value>(row).is_err());
        let mut batch = row.to_vec();
        batch.push(b'\n');
        match validate_and_index(&batch, 0, &mut Vec::new()) {
            Err(JsonlError {
                line: 1,
                reason: JsonlReason::InvalidJson { detail: got, .. },
            }) => assert_eq!(got, detail, "{:?}", String::from_utf8_lossy(row)),
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(row)),
        }
        agrees_with_serde(&batch).unwrap_or_else(|e| panic!("{e}"));
    }
    let accepted: [&[u8]; 4] = [
        deepest.as_bytes(),
        b"{\"a\":\"\\ud83d\\ude00\"}",
        b"{\"a\":1.7976931348623157e308}",
        b"{\"a\":1e-400,\"b\":0e99999999999999999999}",
    ];
    for row in accepted {
        serde_json::from_slice::<serde_json::Value>(row).expect("serde_json builds it");
        let mut batch = row.to_vec();
        batch.push(b'\n');
        assert_eq!(validate_and_index(&batch, 0, &mut Vec::new()), Ok(1));
    }
}
