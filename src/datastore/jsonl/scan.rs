//! The structural scanner behind [`super::validate_and_index`]: one forward pass over a
//! batch that decides, row by row, "exactly one JSON object, valid UTF-8", with no
//! allocation per row and no per-value dispatch through a visitor.
//!
//! The grammar is the one serde_json applies when it parses a row into a
//! `serde_json::Value`, which is how every reader of a result set (sinks' spools, the GUI,
//! exports that rebuild rows) takes a row, so a stored row is one each of them can build:
//! - whitespace is ` `, `\t`, `\r` (and `\n`, which here ends the row);
//! - strings: no byte below 0x20, escapes `\" \\ \/ \b \f \n \r \t` and `\u` with four hex
//!   digits of either case; a `\u` escape of a UTF-16 surrogate must be a leading one
//!   followed at once by a `\u` escape of a trailing one (`parse_unicode_escape` in
//!   serde_json 1.0's `read.rs`, which keys and values both go through);
//! - numbers: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` whose value fits an f64
//!   (`1e400` is refused, `1e-400` is 0); the rare number that could be out of range (an
//!   exponent, or 309 integer digits) is handed to serde_json itself, so the boundary is
//!   exactly its own;
//! - `true`, `false`, `null`; no trailing commas; at most 127 containers open at once,
//!   the row's own object included (serde_json's recursion limit of 128);
//! - after the top-level value only whitespace.
//!
//! UTF-8 is checked in the same pass: outside strings only ASCII tokens are accepted, and a
//! string whose bytes include any non-ASCII byte has its content validated when it closes
//! (std's validator, on bytes still in L1). Valid UTF-8 cannot span an ASCII byte, so this
//! is the same as validating the whole row.
//!
//! Invariant (checked in [`Scanner::new`]): the batch ends with `\n`. Every loop here
//! stops at a `\n` (it is whitespace-terminating, not a string byte, not a digit, not hex),
//! so no scan runs past the end and indexing never fails on input.

/// What is wrong with a row; `at` is the batch index of the offending byte (for "the row
/// ended too early", the `\n` that ended it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RowFault {
    EmptyLine,
    NotAnObject,
    InvalidUtf8,
    Syntax { at: usize, error: Syntax },
}

/// A grammar error, worded as serde_json words the same error code, so messages read as
/// they did when serde_json checked rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum Syntax {
    #[error("EOF while parsing a list")]
    EofInList,
    #[error("EOF while parsing an object")]
    EofInObject,
    #[error("EOF while parsing a string")]
    EofInString,
    #[error("EOF while parsing a value")]
    EofInValue,
    #[error("expected `:`")]
    ExpectedColon,
    #[error("expected `,` or `]`")]
    ExpectedListCommaOrEnd,
    #[error("expected `,` or `}}`")]
    ExpectedObjectCommaOrEnd,
    #[error("expected ident")]
    ExpectedIdent,
    #[error("expected value")]
    ExpectedValue,
    #[error("invalid escape")]
    InvalidEscape,
    #[error("invalid number")]
    InvalidNumber,
    #[error("control character (\\u0000-\\u001F) found while parsing a string")]
    ControlCharacterInString,
    #[error("recursion limit exceeded")]
    RecursionLimitExceeded,
    #[error("lone leading surrogate in hex escape")]
    LoneLeadingSurrogateInHexEscape,
    #[error("unexpected end of hex escape")]
    UnexpectedEndOfHexEscape,
    #[error("number out of range")]
    NumberOutOfRange,
    #[error("key must be a string")]
    KeyMustBeAString,
    #[error("trailing characters")]
    TrailingCharacters,
    #[error("trailing comma")]
    TrailingComma,
}

/// One batch being scanned. Holds the nesting stack so that a batch of nested rows
/// allocates it once (it only grows with the deepest row, at most one bit per byte).
pub(super) struct Scanner<'a> {
    bytes: &'a [u8],
    nesting: Nesting,
}

impl<'a> Scanner<'a> {
    /// Panics unless `bytes` ends with `\n`: the caller checks that first, and every scan
    /// relies on that sentinel to stop.
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        assert_eq!(
            bytes.last(),
            Some(&b'\n'),
            "a batch is scanned only once it ends in \\n"
        );
        Self {
            bytes,
            nesting: Nesting::default(),
        }
    }

    /// Checks the row that starts at `start` (a line start); returns the index of the `\n`
    /// that ends it.
    pub(super) fn row(&mut self, start: usize) -> Result<usize, RowFault> {
        let b = self.bytes;
        let i = skip_whitespace(b, start);
        match b[i] {
            b'{' => {}
            b'\n' => return Err(RowFault::EmptyLine),
            _ => return Err(RowFault::NotAnObject),
        }
        let i = skip_whitespace(b, self.object(i + 1)?);
        match b[i] {
            b'\n' => Ok(i),
            _ => Err(syntax(i, Syntax::TrailingCharacters)),
        }
    }

    /// `i` is just after the row's opening `{`; returns the index just after the `}` that
    /// closes it. Iterative: `in_object` is the kind of the innermost open container and
    /// `nesting` holds the kinds of the ones around it.
    fn object(&mut self, mut i: usize) -> Result<usize, RowFault> {
        let b = self.bytes;
        self.nesting.clear();
        let mut in_object = true;
        let mut state = State::First;
        loop {
            state = match state {
                State::First => {
                    i = skip_whitespace(b, i);
                    match (b[i], in_object) {
                        (b'}', true) | (b']', false) => {
                            i += 1;
                            State::Closed
                        }
                        (b'"', true) => State::Key,
                        (b'\n', true) => return Err(syntax(i, Syntax::EofInObject)),
                        (b'\n', false) => return Err(syntax(i, Syntax::EofInList)),
                        (_, true) => return Err(syntax(i, Syntax::KeyMustBeAString)),
                        (_, false) => State::Value,
                    }
                }
                State::Key => {
                    // At the key's opening quote; `state` stays `Key` for the `continue`s.
                    i = skip_whitespace(b, string(b, i + 1)?);
                    match b[i] {
                        b':' => {}
                        b'\n' => return Err(syntax(i, Syntax::EofInObject)),
                        _ => return Err(syntax(i, Syntax::ExpectedColon)),
                    }
                    i = skip_whitespace(b, i + 1);
                    // The common member, a string or number value followed by `,"`, goes
                    // round here without a state change; anything else takes the general
                    // states below.
                    let c = b[i];
                    if c == b'"' {
                        i = string(b, i + 1)?;
                    } else if c.is_ascii_digit() || c == b'-' {
                        i = number(b, i)?;
                    } else {
                        state = State::Value;
                        continue;
                    }
                    if b[i] == b',' && b[i + 1] == b'"' {
                        i += 1;
                        continue;
                    }
                    State::After
                }
                State::Value => match b[i] {
                    b'"' => {
                        i = string(b, i + 1)?;
                        State::After
                    }
                    b'0'..=b'9' | b'-' => {
                        i = number(b, i)?;
                        State::After
                    }
                    b'{' | b'[' => {
                        // Open now: the innermost container plus the ones around it.
                        if self.nesting.depth + 1 >= MAX_OPEN_CONTAINERS_COUNT {
                            return Err(syntax(i, Syntax::RecursionLimitExceeded));
                        }
                        self.nesting.push(in_object);
                        in_object = b[i] == b'{';
                        i += 1;
                        State::First
                    }
                    b't' => {
                        i = literal(b, i, b"true")?;
                        State::After
                    }
                    b'f' => {
                        i = literal(b, i, b"false")?;
                        State::After
                    }
                    b'n' => {
                        i = literal(b, i, b"null")?;
                        State::After
                    }
                    b'\n' => return Err(syntax(i, Syntax::EofInValue)),
                    _ => return Err(syntax(i, Syntax::ExpectedValue)),
                },
                State::After => {
                    i = skip_whitespace(b, i);
                    match (b[i], in_object) {
                        (b',', _) => {
                            i = skip_whitespace(b, i + 1);
                            after_comma(b[i], in_object).map_err(|error| syntax(i, error))?
                        }
                        (b'}', true) | (b']', false) => {
                            i += 1;
                            State::Closed
                        }
                        (b'\n', true) => return Err(syntax(i, Syntax::EofInObject)),
                        (b'\n', false) => return Err(syntax(i, Syntax::EofInList)),
                        (_, true) => return Err(syntax(i, Syntax::ExpectedObjectCommaOrEnd)),
                        (_, false) => return Err(syntax(i, Syntax::ExpectedListCommaOrEnd)),
                    }
                }
                State::Closed => match self.nesting.pop() {
                    Some(outer_is_object) => {
                        in_object = outer_is_object;
                        State::After
                    }
                    None => return Ok(i),
                },
            };
        }
    }
}

/// Containers a row may hold open at once, its own object included: serde_json's
/// recursion limit (128, the 128th refused), which every reader building a `Value` hits.
const MAX_OPEN_CONTAINERS_COUNT: usize = 127;

/// Where the scan of a container stands.
#[derive(Clone, Copy)]
enum State {
    /// Just after `{` or `[` (whitespace not skipped yet): a member, or the close.
    First,
    /// At a key's opening quote.
    Key,
    /// At the first byte of a value (whitespace skipped).
    Value,
    /// Just after a value: `,` or the close.
    After,
    /// Just after a `}` or `]`.
    Closed,
}

/// The state after a `,` followed by `next` (whitespace skipped).
fn after_comma(next: u8, in_object: bool) -> Result<State, Syntax> {
    match (next, in_object) {
        (b'"', true) => Ok(State::Key),
        (b'}', true) | (b']', false) => Err(Syntax::TrailingComma),
        (b'\n', true) => Err(Syntax::EofInObject),
        (_, true) => Err(Syntax::KeyMustBeAString),
        (_, false) => Ok(State::Value),
    }
}

#[cold]
fn syntax(at: usize, error: Syntax) -> RowFault {
    RowFault::Syntax { at, error }
}

#[inline(always)]
fn skip_whitespace(b: &[u8], mut i: usize) -> usize {
    // Rows rarely hold whitespace: one well-predicted compare for the common case keeps
    // the compiler from folding this and the caller's next match into one jump table,
    // whose indirect jump mispredicts.
    if b[i] > b' ' {
        return i;
    }
    while matches!(b[i], b' ' | b'\t' | b'\r') {
        i += 1;
    }
    i
}

/// `i` is just after a string's opening quote; returns the index just after its closing
/// quote. Validates the content as UTF-8 only if it holds a non-ASCII byte.
#[inline(always)]
fn string(b: &[u8], mut i: usize) -> Result<usize, RowFault> {
    let content_start = i;
    let mut non_ascii = false;
    loop {
        let (at, high) = find_special(b, i);
        non_ascii |= high;
        match b[at] {
            b'"' => {
                if non_ascii && std::str::from_utf8(&b[content_start..at]).is_err() {
                    return Err(RowFault::InvalidUtf8);
                }
                return Ok(at + 1);
            }
            b'\\' => i = escape(b, at + 1)?,
            b'\n' => return Err(syntax(at, Syntax::EofInString)),
            _ => return Err(syntax(at, Syntax::ControlCharacterInString)),
        }
    }
}

/// `i` is just after a backslash inside a string; returns the index after the escape (after
/// both escapes of a surrogate pair).
fn escape(b: &[u8], i: usize) -> Result<usize, RowFault> {
    match b[i] {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(i + 1),
        b'u' => {
            let unit = hex_unit(b, i + 1)?;
            match unit {
                0xDC00..=0xDFFF => Err(syntax(i + 4, Syntax::LoneLeadingSurrogateInHexEscape)),
                0xD800..=0xDBFF => {
                    // A leading surrogate: a `\u` escape of a trailing one must follow.
                    let next = i + 5;
                    if b[next] != b'\\' || b[next + 1] != b'u' {
                        let at = if b[next] == b'\\' { next + 1 } else { next };
                        return Err(match b[at] {
                            b'\n' => syntax(at, Syntax::EofInString),
                            _ => syntax(at, Syntax::UnexpectedEndOfHexEscape),
                        });
                    }
                    match hex_unit(b, next + 2)? {
                        0xDC00..=0xDFFF => Ok(next + 6),
                        _ => Err(syntax(next + 5, Syntax::LoneLeadingSurrogateInHexEscape)),
                    }
                }
                _ => Ok(i + 5),
            }
        }
        b'\n' => Err(syntax(i, Syntax::EofInString)),
        _ => Err(syntax(i, Syntax::InvalidEscape)),
    }
}

/// The UTF-16 code unit of the four hex digits at `i`. A `\n` among them is not hex, so
/// this never reads past the row.
fn hex_unit(b: &[u8], i: usize) -> Result<u16, RowFault> {
    let mut unit = 0u16;
    for k in i..i + 4 {
        let digit = match b.get(k) {
            Some(c @ b'0'..=b'9') => c - b'0',
            Some(c @ b'a'..=b'f') => c - b'a' + 10,
            Some(c @ b'A'..=b'F') => c - b'A' + 10,
            Some(b'\n') | None => return Err(syntax(k, Syntax::EofInString)),
            Some(_) => return Err(syntax(k, Syntax::InvalidEscape)),
        };
        unit = unit << 4 | u16::from(digit);
    }
    Ok(unit)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The index of the first byte at or after `i` that ends a run of plain string bytes (`"`,
/// `\`, or below 0x20, which includes the `\n` sentinel), and whether a byte before it is
/// non-ASCII. Eight bytes at a time (SWAR): strings in rows are short, so a call has to be
/// cheap more than wide.
#[inline(always)]
fn find_special(b: &[u8], mut i: usize) -> (usize, bool) {
    let mut high = 0u64;
    while let Some(chunk) = b.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("an 8-byte slice"));
        let special = special_bytes(word);
        if special != 0 {
            let first_bit = special.trailing_zeros();
            // The high bits of the bytes before the special one.
            let before = (1u64 << first_bit) - 1;
            return (
                i + (first_bit / 8) as usize,
                (high | (word & HIGH_BITS & before)) != 0,
            );
        }
        high |= word & HIGH_BITS;
        i += 8;
    }
    loop {
        let c = b[i];
        if c == b'"' || c == b'\\' || c < 0x20 {
            return (i, high != 0);
        }
        high |= u64::from(c & 0x80);
        i += 1;
    }
}

/// The high bit of each byte of `word` that is `"`, `\` or below 0x20. Exact for the
/// lowest such byte (a borrow only propagates upward from a byte that matched), which is
/// all `find_special` reads.
#[inline(always)]
fn special_bytes(word: u64) -> u64 {
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let zero_quote = quote.wrapping_sub(ONES) & !quote;
    let zero_backslash = backslash.wrapping_sub(ONES) & !backslash;
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    (zero_quote | zero_backslash | control) & HIGH_BITS
}

/// `i` is at a number's first byte (`-` or a digit); returns the index after it.
#[inline(always)]
fn number(b: &[u8], mut i: usize) -> Result<usize, RowFault> {
    let start = i;
    if b[i] == b'-' {
        i += 1;
    }
    let integer_start = i;
    match b[i] {
        b'0' => {
            i += 1;
            // There can be only one leading '0' (serde_json's `parse_integer`).
            if b[i].is_ascii_digit() {
                return Err(syntax(i, Syntax::InvalidNumber));
            }
        }
        b'1'..=b'9' => i = skip_digits(b, i + 1),
        _ => return Err(syntax(i, Syntax::InvalidNumber)),
    }
    let mut may_overflow = i - integer_start >= MIN_INTEGER_DIGITS_THAT_MAY_OVERFLOW_COUNT;
    if b[i] == b'.' {
        i = at_least_one_digit(b, i + 1)?;
    }
    if b[i] | 0x20 == b'e' {
        i += 1;
        if matches!(b[i], b'+' | b'-') {
            i += 1;
        }
        i = at_least_one_digit(b, i)?;
        may_overflow = true;
    }
    if may_overflow {
        out_of_range(b, start, i)?;
    }
    Ok(i)
}

/// Integer digits from which a number without an exponent may exceed f64's range
/// (`f64::MAX` ≈ 1.8e308 has 309).
const MIN_INTEGER_DIGITS_THAT_MAY_OVERFLOW_COUNT: usize = 309;

/// Whether serde_json builds the number `b[start..end]` (grammar already checked): it
/// refuses one whose value rounds past f64's range. Rare (exponents, huge integers), so
/// its own parser decides, boundary included.
#[cold]
fn out_of_range(b: &[u8], start: usize, end: usize) -> Result<(), RowFault> {
    match serde_json::from_slice::<f64>(&b[start..end]) {
        Ok(_) => Ok(()),
        Err(_) => Err(syntax(start, Syntax::NumberOutOfRange)),
    }
}

#[inline(always)]
fn skip_digits(b: &[u8], mut i: usize) -> usize {
    while b[i].is_ascii_digit() {
        i += 1;
    }
    i
}

fn at_least_one_digit(b: &[u8], i: usize) -> Result<usize, RowFault> {
    if b[i].is_ascii_digit() {
        Ok(skip_digits(b, i + 1))
    } else {
        Err(syntax(i, Syntax::InvalidNumber))
    }
}

/// `i` is at the first byte of `word` (`true`, `false` or `null`).
fn literal(b: &[u8], i: usize, word: &[u8]) -> Result<usize, RowFault> {
    let end = i + word.len();
    if b.get(i..end) == Some(word) {
        return Ok(end);
    }
    // The first byte that differs: the row ended there, or it is not the word.
    let at = (i..end)
        .find(|&k| b.get(k) != word.get(k - i))
        .expect("a mismatch exists");
    match b.get(at) {
        Some(b'\n') | None => Err(syntax(at, Syntax::EofInValue)),
        Some(_) => Err(syntax(at, Syntax::ExpectedIdent)),
    }
}

/// The kinds (object or array) of the containers around the innermost open one, as a bit
/// stack. Invariant: `depth <= words.len() * 64`.
#[derive(Default)]
struct Nesting {
    words: Vec<u64>,
    depth: usize,
}

impl Nesting {
    fn clear(&mut self) {
        self.depth = 0;
    }

    #[inline(always)]
    fn push(&mut self, is_object: bool) {
        let (word, bit) = (self.depth / 64, self.depth % 64);
        if word == self.words.len() {
            self.words.push(0);
        }
        let w = &mut self.words[word];
        *w = (*w & !(1 << bit)) | (u64::from(is_object) << bit);
        self.depth += 1;
    }

    #[inline(always)]
    fn pop(&mut self) -> Option<bool> {
        self.depth = self.depth.checked_sub(1)?;
        Some((self.words[self.depth / 64] >> (self.depth % 64)) & 1 == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the SWAR search finds exactly the first special byte, at every position of
    // the word and past it, and reports non-ASCII bytes only before it. Method: every
    // position of a 24-byte buffer, with special and non-ASCII bytes around it.
    #[test]
    fn find_special_is_exact_at_every_position() {
        for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
            for at in 0..24 {
                for high_before in [None, Some(0usize), Some(7)] {
                    let mut buf = vec![b'a'; 24];
                    buf[at] = special;
                    // Bytes that could fool a borrow-based test if it were not exact.
                    for (k, slot) in buf.iter_mut().enumerate().skip(at + 1) {
                        *slot = [0x21, 0x1f, b'"', 0xff, 0x5d][k % 5];
                    }
                    let high = high_before.filter(|&h| h < at);
                    if let Some(h) = high {
                        buf[h] = 0xc3;
                    }
                    buf.push(b'\n');
                    assert_eq!(
                        find_special(&buf, 0),
                        (at, high.is_some()),
                        "special {special:#x} at {at}, high {high:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn special_bytes_flags_nothing_in_plain_text() {
        for c in (0x20u8..=0xff).filter(|c| *c != b'"' && *c != b'\\') {
            assert_eq!(special_bytes(ONES * u64::from(c)), 0, "{c:#x}");
        }
    }

    #[test]
    fn nesting_keeps_kinds_past_a_word() {
        let mut nesting = Nesting::default();
        let kinds: Vec<bool> = (0..200).map(|k| k % 3 == 0).collect();
        for &kind in &kinds {
            nesting.push(kind);
        }
        for &kind in kinds.iter().rev() {
            assert_eq!(nesting.pop(), Some(kind));
        }
        assert_eq!(nesting.pop(), None);
    }
}
