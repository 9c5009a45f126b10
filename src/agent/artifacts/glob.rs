//! `Generic.Files.Glob`: expand an absolute path pattern and emit one row per match
//! (path, size, mode, mtime, is_dir, optional SHA-256).
//!
//! The expander is ours rather than the `glob` crate's so that its limits are ours: `**`
//! never follows symlinks (no loops) and stops at a fixed depth, a huge directory costs
//! memory only for its matching names, and the walk stops at `max_results`.
//!
//! Syntax, per path segment: `*` any run, `?` one character, `[abc]` `[a-z]` `[!a]`
//! (`^` also negates) one character of a class, whose first member may be `]`; `**` as a
//! whole segment matches zero or more directories. There is no escape character: a
//! literal `[` is `[[]`. Dot files are matched by `*`, because an analyst hunting for
//! files wants hidden ones too.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::ops::ControlFlow;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::collect_files::FileCopier;
use super::sink::ArtifactSink;
use super::ArtifactError;
use crate::artifacts::FILES_GLOB;
use crate::limits::{DEFAULT_COLLECTED_FILE_MAX_BYTES, DEFAULT_COLLECTED_TOTAL_MAX_BYTES};

/// How many directories deep `**` descends. Deeper trees exist (node_modules) but a
/// `**` hunt over them is rarely what was meant, and the bound keeps the walk's stack
/// and its run time finite on a pathological tree.
const MAX_RECURSION_DEPTH: usize = 32;

/// Read size while hashing: large enough that syscall overhead is noise, small enough
/// to sit in L2 next to the SHA-256 state.
const HASH_BUFFER_BYTES: usize = 64 * 1024;

/// Files are hashed only up to this size. A regular-looking file can be endless
/// (/proc/kcore reports terabytes); 16 GiB covers disk images an analyst asks for and
/// bounds one row at roughly a minute of disk reads.
const MAX_HASH_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// The `Generic.Files.Glob` parameters, parsed. Invariant: built from parameters that
/// `artifacts::resolve_params` has already checked, so only the pattern can still fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GlobParams {
    pub pattern: String,
    pub hash: bool,
    pub max_results: u64,
    /// Upload each regular file too (`collect_files`'s copier, its default budgets).
    pub upload: bool,
}

impl GlobParams {
    pub(super) fn parse(params: &BTreeMap<String, String>) -> Result<Self, ArtifactError> {
        let field = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
        let max_results = field("max_results")
            .parse()
            .map_err(|_| bad_param("max_results", "must be a non-negative integer".to_string()))?;
        Ok(GlobParams {
            pattern: field("pattern").to_string(),
            hash: field("hash") == "true",
            max_results,
            upload: field("upload") == "true",
        })
    }
}

/// Runs `Generic.Files.Glob`, its rows (and with `upload`, its files) into `sink`.
pub(super) fn collect_into(
    params: &GlobParams,
    sink: &mut ArtifactSink<'_>,
) -> Result<(), ArtifactError> {
    if !params.upload {
        return collect(params, &mut |row| sink.row(&row));
    }
    let segments = compile(&params.pattern).map_err(|reason| bad_param("pattern", reason))?;
    let mut copier = FileCopier::new(
        DEFAULT_COLLECTED_FILE_MAX_BYTES,
        DEFAULT_COLLECTED_TOTAL_MAX_BYTES,
    );
    let mut seen = HashSet::new();
    let mut matches = 0u64;
    let _ = walk(&segments, &mut seen, &mut |path| {
        if matches >= params.max_results {
            return ControlFlow::Break(());
        }
        matches += 1;
        // Directories, links to nothing and special files keep their plain row; a
        // regular file's row is the copier's, with the listing's mode and is_dir.
        let listing = file_row(path, None);
        let mode = listing.get("mode").cloned();
        let flow = copier.collect_with(
            path,
            sink,
            |row| {
                if let Some(mode) = mode {
                    row["mode"] = mode;
                }
                row["is_dir"] = Value::Bool(false);
            },
            |_| Some(listing),
        );
        if matches >= params.max_results {
            return ControlFlow::Break(());
        }
        flow
    });
    Ok(())
}

/// Runs `Generic.Files.Glob` without uploads, handing each row to `emit` until it says
/// stop or `max_results` is reached.
pub(super) fn collect(
    params: &GlobParams,
    emit: &mut dyn FnMut(Value) -> ControlFlow<()>,
) -> Result<(), ArtifactError> {
    let segments = compile(&params.pattern).map_err(|reason| bad_param("pattern", reason))?;
    if params.max_results == 0 {
        return Ok(());
    }
    let mut buffer = vec![0; if params.hash { HASH_BUFFER_BYTES } else { 0 }];
    let mut emitted = 0u64;
    let mut seen = HashSet::new();
    let _ = walk(&segments, &mut seen, &mut |path| {
        debug_assert!(emitted < params.max_results);
        let row = file_row(path, params.hash.then_some(&mut buffer[..]));
        emit(row)?;
        emitted += 1;
        if emitted >= params.max_results {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    Ok(())
}

/// Walks the matches of a compiled pattern, handing each path not in `seen` to `visit`
/// (and adding it), until `visit` says stop. `Break` is returned when it did.
pub(super) fn walk(
    segments: &[Segment],
    seen: &mut HashSet<PathBuf>,
    visit: &mut dyn FnMut(&Path) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let mut walker = Walker { seen, visit };
    walker.walk(Path::new("/"), segments, 0)
}

/// One `/`-separated piece of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment {
    /// No wildcard: joined, not listed, so `/etc/passwd` costs one lstat.
    Literal(String),
    Wild(Vec<Token>),
    /// `**`: zero or more directories.
    AnyDepth,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Token {
    Char(char),
    AnyChar,
    AnyRun,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Parses a pattern into segments. A trailing `**` means "everything below", so it is
/// compiled as `**/*`; repeated `**` collapse into one, which changes no match.
pub(super) fn compile(pattern: &str) -> Result<Vec<Segment>, String> {
    if !pattern.starts_with('/') {
        return Err("must be an absolute path pattern".to_string());
    }
    let mut segments = Vec::new();
    for piece in pattern.split('/').filter(|p| !p.is_empty()) {
        let segment = compile_segment(piece)?;
        if segment == Segment::AnyDepth && segments.last() == Some(&Segment::AnyDepth) {
            continue;
        }
        segments.push(segment);
    }
    if segments.last() == Some(&Segment::AnyDepth) {
        segments.push(Segment::Wild(vec![Token::AnyRun]));
    }
    Ok(segments)
}

fn compile_segment(piece: &str) -> Result<Segment, String> {
    if piece == "**" {
        return Ok(Segment::AnyDepth);
    }
    let mut tokens = Vec::new();
    let mut chars = piece.chars().peekable();
    while let Some(c) = chars.next() {
        let token = match c {
            '*' if tokens.last() == Some(&Token::AnyRun) => continue,
            '*' => Token::AnyRun,
            '?' => Token::AnyChar,
            '[' => compile_class(&mut chars).ok_or_else(|| format!("unclosed `[` in `{piece}`"))?,
            c => Token::Char(c),
        };
        tokens.push(token);
    }
    if tokens.iter().all(|t| matches!(t, Token::Char(_))) {
        return Ok(Segment::Literal(piece.to_string()));
    }
    Ok(Segment::Wild(tokens))
}

/// Parses a class after its `[`. The first member may be `]`; `a-z` is a range unless
/// the `-` is last. `None` if the class never closes.
fn compile_class(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<Token> {
    let negated = chars.next_if(|&c| c == '!' || c == '^').is_some();
    let mut ranges = Vec::new();
    loop {
        let c = chars.next()?;
        if c == ']' && !ranges.is_empty() {
            return Some(Token::Class { negated, ranges });
        }
        let mut lookahead = chars.clone();
        match (lookahead.next(), lookahead.next()) {
            (Some('-'), Some(end)) if end != ']' => {
                chars.nth(1);
                ranges.push((c, end));
            }
            _ => ranges.push((c, c)),
        }
    }
}

impl Token {
    fn matches_one(&self, c: char) -> bool {
        match self {
            Token::Char(expected) => *expected == c,
            Token::AnyChar => true,
            Token::AnyRun => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(low, high)| low <= c && c <= high) != *negated
            }
        }
    }
}

/// Wildcard match of one name. Iterative with a single backtrack point (the last `*`),
/// so the cost is O(tokens × name) even for `*a*a*a*b` against `aaaa…`.
fn matches(tokens: &[Token], name: &[char]) -> bool {
    let (mut t, mut n) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        match tokens.get(t) {
            Some(Token::AnyRun) => {
                backtrack = Some((t + 1, n));
                t += 1;
                continue;
            }
            Some(token) if token.matches_one(name[n]) => {
                t += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        let Some((after_star, start)) = backtrack else {
            return false;
        };
        // Let the last `*` swallow one more character and retry from there.
        t = after_star;
        n = start + 1;
        backtrack = Some((after_star, start + 1));
    }
    tokens[t..].iter().all(|t| *t == Token::AnyRun)
}

/// The walk's state. Invariant: `seen` holds every path visited, because with two `**`
/// one path can be reached by two routes.
struct Walker<'a> {
    seen: &'a mut HashSet<PathBuf>,
    visit: &'a mut dyn FnMut(&Path) -> ControlFlow<()>,
}

impl Walker<'_> {
    /// Matches `segments` below `dir`. `Break` means the visitor said stop.
    fn walk(&mut self, dir: &Path, segments: &[Segment], depth: usize) -> ControlFlow<()> {
        let Some((first, rest)) = segments.split_first() else {
            return self.emit_match(dir);
        };
        match first {
            Segment::Literal(name) => {
                let path = dir.join(name);
                if rest.is_empty() {
                    if fs::symlink_metadata(&path).is_ok() {
                        return self.emit_match(&path);
                    }
                    return ControlFlow::Continue(());
                }
                // Explicit segments follow symlinks, as a shell does (`/var/run` -> /run).
                if path.is_dir() {
                    return self.walk(&path, rest, depth);
                }
                ControlFlow::Continue(())
            }
            Segment::Wild(tokens) => {
                for path in list_dir(dir, |name, _| matches(tokens, name)) {
                    if rest.is_empty() {
                        self.emit_match(&path)?;
                    } else if path.is_dir() {
                        self.walk(&path, rest, depth)?;
                    }
                }
                ControlFlow::Continue(())
            }
            Segment::AnyDepth => self.walk_any_depth(dir, segments, rest, depth),
        }
    }

    /// `**`: match `rest` here (zero directories), then descend into each real
    /// subdirectory with `**` still in front. Symlinked directories are not entered,
    /// which is what keeps a link back up the tree from looping.
    fn walk_any_depth(
        &mut self,
        dir: &Path,
        segments: &[Segment],
        rest: &[Segment],
        depth: usize,
    ) -> ControlFlow<()> {
        self.walk(dir, rest, depth)?;
        if depth >= MAX_RECURSION_DEPTH {
            tracing::debug!(dir = %dir.display(), "glob: ** depth limit reached");
            return ControlFlow::Continue(());
        }
        for sub in list_dir(dir, |_, file_type| file_type.is_dir()) {
            self.walk(&sub, segments, depth + 1)?;
        }
        ControlFlow::Continue(())
    }

    fn emit_match(&mut self, path: &Path) -> ControlFlow<()> {
        if !self.seen.insert(path.to_path_buf()) {
            return ControlFlow::Continue(());
        }
        (self.visit)(path)
    }
}

/// Entries of `dir` that `keep` accepts (given the name and the entry's own, unfollowed
/// type), sorted so results are stable. Only kept names are held, so a directory of a
/// million files costs memory for its matches only. An unreadable directory yields
/// nothing: a glob over a tree with a few locked corners still answers for the rest.
fn list_dir(dir: &Path, keep: impl Fn(&[char], fs::FileType) -> bool) -> Vec<PathBuf> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "glob: directory skipped");
            return Vec::new();
        }
    };
    let mut kept = Vec::new();
    for entry in entries.flatten() {
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        let name: Vec<char> = entry.file_name().to_string_lossy().chars().collect();
        if keep(&name, file_type) {
            kept.push(entry.path());
        }
    }
    kept.sort_unstable();
    kept
}

/// The row for one match. The link itself is described, not its target (lstat), as
/// forensic listings do. Failures become an `error` field so one unreadable file does
/// not cost the rest of the results.
fn file_row(path: &Path, hash_buffer: Option<&mut [u8]>) -> Value {
    let path_text = path.to_string_lossy();
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => return json!({ "path": path_text, "error": e.to_string() }),
    };
    let mut row = json!({
        "path": path_text,
        "size": meta.len(),
        "mode": format!("{:o}", meta.mode()),
        "mtime": meta.mtime(),
        "is_dir": meta.is_dir(),
    });
    if let Some(buffer) = hash_buffer {
        // Present (null) on every row when asked for, so result tables keep one shape.
        row["sha256"] = Value::Null;
        if meta.file_type().is_file() {
            match sha256_file(path, buffer) {
                Ok(hex) => row["sha256"] = Value::String(hex),
                Err(e) => row["error"] = Value::String(format!("sha256: {e}")),
            }
        }
    }
    row
}

/// SHA-256 of a file, streamed through `buffer`; refuses past `MAX_HASH_BYTES`.
fn sha256_file(path: &Path, buffer: &mut [u8]) -> io::Result<String> {
    debug_assert_eq!(buffer.len(), HASH_BUFFER_BYTES);
    let mut file = open_nonblocking(path)?;
    let mut hasher = Sha256::new();
    let mut total_bytes: u64 = 0;
    loop {
        let read = match file.read(buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total_bytes += read as u64;
        if total_bytes > MAX_HASH_BYTES {
            let why = format!("larger than {MAX_HASH_BYTES} bytes, not hashed");
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, why));
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Opens with O_NONBLOCK so a "regular" file that blocks on read (/proc/kmsg) fails
/// with EAGAIN instead of hanging the collection, and with O_NOATIME so hashing does
/// not rewrite the access times an investigation may rely on. O_NOATIME needs file
/// ownership or CAP_FOWNER, so it is dropped when refused.
pub(super) fn open_nonblocking(path: &Path) -> io::Result<fs::File> {
    let open = |flags| {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path)
    };
    match open(libc::O_NONBLOCK | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(libc::O_NONBLOCK),
        result => result,
    }
}

fn bad_param(parameter: &str, reason: String) -> ArtifactError {
    ArtifactError::BadParameter {
        artifact: FILES_GLOB.to_string(),
        parameter: parameter.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the expander finds exactly the files a pattern names, with correct sizes
    //! and hashes, honours `max_results`, and reports unreadable matches as rows.
    //! Method: build a known tree in a fresh temp directory and glob over it.

    use super::*;

    /// sha256("abc"), FIPS 180-2 appendix B.1.
    const SHA256_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    /// sha256 of the empty input.
    const SHA256_EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("packhunt-glob-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        fs::write(root.join("a.txt"), "abc").unwrap();
        fs::write(root.join(".hidden.txt"), "").unwrap();
        fs::write(root.join("b.log"), "0123456789").unwrap();
        fs::create_dir_all(root.join("sub/deeper")).unwrap();
        fs::write(root.join("sub/c.txt"), "hello world").unwrap();
        fs::write(root.join("sub/deeper/d.txt"), vec![b'x'; 200_000]).unwrap();
        // A link back up the tree: `**` must not loop through it.
        std::os::unix::fs::symlink(root, root.join("sub/loop")).unwrap();
        dir
    }

    fn glob(pattern: &str, hash: bool, max_results: u64) -> Vec<Value> {
        let params = GlobParams {
            pattern: pattern.to_string(),
            hash,
            max_results,
            upload: false,
        };
        let mut rows = Vec::new();
        collect(&params, &mut |row| {
            rows.push(row);
            ControlFlow::Continue(())
        })
        .unwrap();
        rows
    }

    fn paths(rows: &[Value], root: &Path) -> Vec<String> {
        let prefix = format!("{}/", root.display());
        let mut names: Vec<String> = rows
            .iter()
            .map(|r| {
                r["path"]
                    .as_str()
                    .unwrap()
                    .strip_prefix(&prefix)
                    .unwrap()
                    .to_string()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn star_matches_one_level_with_sizes_and_hashes() {
        let dir = tree();
        let rows = glob(&format!("{}/*.txt", dir.path().display()), true, 100);
        assert_eq!(paths(&rows, dir.path()), [".hidden.txt", "a.txt"]);
        let a = rows
            .iter()
            .find(|r| r["path"].as_str().unwrap().ends_with("/a.txt"))
            .unwrap();
        assert_eq!(a["size"], 3);
        assert_eq!(a["sha256"], SHA256_ABC);
        assert_eq!(a["is_dir"], false);
        assert!(
            a["mode"].as_str().unwrap().starts_with("100"),
            "{}",
            a["mode"]
        );
        assert!(a["mtime"].as_i64().unwrap() > 1_000_000_000);
        assert!(a.get("error").is_none());
        let hidden = rows
            .iter()
            .find(|r| r["path"].as_str().unwrap().ends_with("hidden.txt"));
        assert_eq!(hidden.unwrap()["sha256"], SHA256_EMPTY);
    }

    #[test]
    fn double_star_recurses_without_following_symlinks() {
        let dir = tree();
        let rows = glob(&format!("{}/**/*.txt", dir.path().display()), true, 100);
        assert_eq!(
            paths(&rows, dir.path()),
            [".hidden.txt", "a.txt", "sub/c.txt", "sub/deeper/d.txt"]
        );
        let d = rows
            .iter()
            .find(|r| r["path"].as_str().unwrap().ends_with("/d.txt"))
            .unwrap();
        assert_eq!(d["size"], 200_000);
        // Spans several 64 KiB reads, so this checks the streaming loop, not one read.
        let expected = hex::encode(Sha256::digest(vec![b'x'; 200_000]));
        assert_eq!(d["sha256"], expected.as_str());
    }

    #[test]
    fn trailing_double_star_lists_everything_below_once() {
        let dir = tree();
        let rows = glob(&format!("{}/sub/**", dir.path().display()), false, 100);
        assert_eq!(
            paths(&rows, dir.path()),
            ["sub/c.txt", "sub/deeper", "sub/deeper/d.txt", "sub/loop"]
        );
        let deeper = rows
            .iter()
            .find(|r| r["path"].as_str().unwrap().ends_with("deeper"))
            .unwrap();
        assert_eq!(deeper["is_dir"], true);
        assert!(deeper.get("sha256").is_none(), "no hash field unless asked");
        // Two `**` can reach one path two ways; it must still appear once.
        let rows = glob(
            &format!("{}/**/**/sub/**/d.txt", dir.path().display()),
            false,
            100,
        );
        assert_eq!(paths(&rows, dir.path()), ["sub/deeper/d.txt"]);
    }

    #[test]
    fn classes_question_marks_and_literals() {
        let dir = tree();
        let root = dir.path().display();
        assert_eq!(
            paths(&glob(&format!("{root}/[ab].*"), false, 100), dir.path()),
            ["a.txt", "b.log"]
        );
        assert_eq!(
            paths(&glob(&format!("{root}/[!a].log"), false, 100), dir.path()),
            ["b.log"]
        );
        assert_eq!(
            paths(&glob(&format!("{root}/?.t?t"), false, 100), dir.path()),
            ["a.txt"]
        );
        assert_eq!(
            paths(&glob(&format!("{root}/sub/c.txt"), false, 100), dir.path()),
            ["sub/c.txt"]
        );
        assert!(glob(&format!("{root}/sub/missing.txt"), false, 100).is_empty());
        assert!(glob(&format!("{root}/nodir/*"), false, 100).is_empty());
    }

    #[test]
    fn max_results_caps_the_walk() {
        let dir = tree();
        let pattern = format!("{}/**/*", dir.path().display());
        assert_eq!(glob(&pattern, false, 2).len(), 2);
        assert_eq!(glob(&pattern, false, 1).len(), 1);
        assert!(glob(&pattern, false, 0).is_empty());
        assert!(glob(&pattern, false, 1000).len() > 2);
    }

    #[test]
    fn vanished_file_gives_an_error_row() {
        let dir = tree();
        let gone = dir.path().join("gone.txt");
        let mut buffer = vec![0; HASH_BUFFER_BYTES];
        let row = file_row(&gone, Some(&mut buffer));
        assert_eq!(row["path"], &*gone.to_string_lossy());
        assert!(
            row["error"].as_str().unwrap().contains("No such file"),
            "{row}"
        );
    }

    #[test]
    fn bad_patterns_are_parameter_errors() {
        for pattern in ["relative/*", "/tmp/[ab", "/tmp/[]"] {
            let params = GlobParams {
                pattern: pattern.to_string(),
                hash: false,
                max_results: 1,
                upload: false,
            };
            let err = collect(&params, &mut |_| ControlFlow::Continue(())).unwrap_err();
            assert!(
                matches!(err, ArtifactError::BadParameter { .. }),
                "{pattern}: {err}"
            );
        }
    }

    #[test]
    fn matcher_handles_stars_and_classes() {
        let case = |pattern: &str, name: &str| {
            let Segment::Wild(tokens) = compile_segment(pattern).unwrap() else {
                return pattern == name;
            };
            matches(&tokens, &name.chars().collect::<Vec<_>>())
        };
        assert!(case("*.conf", "resolv.conf"));
        assert!(!case("*.conf", "resolv.conf.bak"));
        assert!(case("*a*b", "xaaab"));
        assert!(!case("*a*a*a*b", &"a".repeat(200)));
        assert!(case("[]]x", "]x"));
        assert!(case("[a-c]?", "bz"));
        assert!(!case("[^a-c]?", "bz"));
        assert!(case("[[]x]", "[x]"));
        assert!(case("a**b", "ab"));
    }
}
