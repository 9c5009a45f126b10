//! Listing a folder of id-named entries: the loop the flow, task, client and hunt listings
//! share. Only ids are written there, so a name that does not parse as one (the temp file
//! of an unfinished atomic write, junk an operator left) is skipped, never an error.

use std::fs::{self, DirEntry};
use std::io;
use std::path::Path;

use super::{io_error, DatastoreError};

/// The entries of `dir` whose name, less `suffix`, parses as an id, each with its entry
/// for the caller's type or metadata check. A missing folder lists as empty: nothing has
/// been written there yet.
pub(crate) fn ids_in<'a, T, E>(
    dir: &'a Path,
    suffix: &'a str,
    parse: impl Fn(&str) -> Result<T, E> + 'a,
) -> Result<impl Iterator<Item = Result<(T, DirEntry), DatastoreError>> + 'a, DatastoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => Some(entries),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error("list", dir)(e)),
    };
    Ok(entries.into_iter().flatten().filter_map(move |entry| {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => return Some(Err(io_error("list", dir)(e))),
        };
        let name = entry.file_name();
        let id = parse(name.to_str()?.strip_suffix(suffix)?).ok()?;
        Some(Ok((id, entry)))
    }))
}

#[cfg(test)]
mod tests {
    //! Goal: only id-named entries come back, a missing folder is empty. Method: a temp
    //! folder with ids, junk and a temp-file name.

    use super::*;
    use crate::ids::FlowId;

    #[test]
    fn lists_only_names_that_parse_and_treats_a_missing_folder_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["F.0123456789ABCDEF.json", "F.0123456789ABCDEF", "junk.json"] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        fs::write(dir.path().join(".F.0000000000000000.json.tmp"), b"").unwrap();
        let ids: Vec<FlowId> = ids_in(dir.path(), ".json", FlowId::parse)
            .unwrap()
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(ids, [FlowId::parse("F.0123456789ABCDEF").unwrap()]);
        let missing = dir.path().join("missing");
        assert_eq!(ids_in(&missing, "", FlowId::parse).unwrap().count(), 0);
    }
}
