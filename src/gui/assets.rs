//! The embedded asset table: every file under `src/gui/assets/`, its content type (from
//! its extension) and an ETag (a digest of its bytes), looked up by request path.
//!
//! Must not: read files at run time (the binary carries the assets, so a deployment
//! needs nothing beside it) or answer for a path outside the table.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Path under `src/gui/assets/`, as it follows `/assets/` in a URL.
    pub path: &'static str,
    pub bytes: &'static [u8],
    pub content_type: &'static str,
    /// Quoted strong validator (RFC 9110 8.8.3): the first 16 bytes of the SHA-256 of
    /// `bytes`, in hex. Invariant: changes whenever `bytes` do.
    pub etag: String,
}

macro_rules! embedded {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!("assets/", $path)) as &[u8])),*]
    };
}

/// Every asset. A unit test checks this list against the folder, so a new file cannot be
/// forgotten here.
const FILES: &[(&str, &[u8])] = embedded![
    "index.html",
    "app.js",
    "ui.js",
    "style.css",
    "views/login.js",
    "views/clients.js",
    "views/client.js",
    "views/collection.js",
    "views/dashboard.js",
    "views/hunts.js",
    "views/hunt.js",
    "views/events.js",
    "views/audit.js",
    "views/users.js",
    "views/live-common.js",
    "params.js",
    "live.css",
];

/// The page served at `/`.
pub const INDEX_PATH: &str = "index.html";

/// The asset at `path` (relative to `/assets/`), if there is one.
pub fn find(path: &str) -> Option<&'static Asset> {
    table().iter().find(|a| a.path == path)
}

/// Every embedded asset.
pub fn all() -> &'static [Asset] {
    table()
}

fn table() -> &'static [Asset] {
    static TABLE: OnceLock<Vec<Asset>> = OnceLock::new();
    TABLE.get_or_init(|| {
        FILES
            .iter()
            .map(|&(path, bytes)| {
                let digest = Sha256::digest(bytes);
                Asset {
                    path,
                    bytes,
                    content_type: content_type(path),
                    etag: format!("\"{}\"", hex::encode(&digest[..16])),
                }
            })
            .collect()
    })
}

/// The content type for a file name's extension; unknown ones are opaque bytes (and,
/// with `nosniff`, never run as script).
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_on_disk(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("assets folder readable") {
            let entry = entry.expect("assets entry");
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().expect("file type").is_dir() {
                files_on_disk(&entry.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }

    #[test]
    fn every_file_in_the_folder_is_embedded_and_nothing_else() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gui/assets");
        let mut on_disk = Vec::new();
        files_on_disk(&dir, "", &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = all().iter().map(|a| a.path.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }

    /// The Content-Security-Policy forbids inline script and style; an inline one would
    /// silently not run, so none may be written.
    #[test]
    fn no_inline_script_style_or_handlers() {
        for asset in all().iter().filter(|a| a.path.ends_with(".html")) {
            let html = std::str::from_utf8(asset.bytes).expect("HTML is UTF-8");
            let lower = html.to_ascii_lowercase();
            assert!(!lower.contains("<style"), "{}: <style>", asset.path);
            assert!(!lower.contains(" style="), "{}: style=", asset.path);
            for (i, _) in lower.match_indices("<script") {
                let tag = &lower[i..i + lower[i..].find('>').expect("tag closes")];
                assert!(tag.contains(" src="), "{}: inline script", asset.path);
            }
            assert!(
                !lower
                    .split_whitespace()
                    .any(|w| w.starts_with("on") && w.contains('=')),
                "{}: inline handler",
                asset.path
            );
        }
        for asset in all().iter().filter(|a| a.path.ends_with(".js")) {
            let js = std::str::from_utf8(asset.bytes).expect("JS is UTF-8");
            for forbidden in [
                "eval(",
                "new Function(",
                ".innerHTML",
                "style.cssText",
                "setAttribute('style'",
            ] {
                assert!(!js.contains(forbidden), "{}: {forbidden}", asset.path);
            }
        }
    }

    #[test]
    fn lookup_and_types() {
        let index = find(INDEX_PATH).expect("index embedded");
        assert_eq!(index.content_type, "text/html; charset=utf-8");
        assert_eq!(
            find("app.js").unwrap().content_type,
            "text/javascript; charset=utf-8"
        );
        assert!(find("../Cargo.toml").is_none());
        assert!(find("").is_none());
        assert_ne!(find("app.js").unwrap().etag, index.etag);
    }
}
