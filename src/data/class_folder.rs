//! Class names as folder names, both ways: `serve --collect` writes a class's pictures into
//! [`folder_of_class`], and `import` reads a folder as the class [`class_of_folder`]. A name
//! that cannot be one folder name (`a/b`, `..`, `.hidden`, which `import` skips) or that some
//! file systems refuse (`x\y`, `a:b`) is percent-encoded, so every class name makes its own
//! folder and comes back unchanged.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Characters encoded in a folder name: `%` itself, path separators, control characters and
/// those that Windows file systems refuse.
const UNSAFE: &AsciiSet = &CONTROLS
    .add(b'%')
    .add(b'/')
    .add(b'\\')
    .add(b':')
    .add(b'*')
    .add(b'?')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'|');

/// The folder that holds the pictures of the class `name` (a non-empty name).
pub fn folder_of_class(name: &str) -> String {
    let encoded = utf8_percent_encode(name, UNSAFE).to_string();
    // A leading dot would hide the folder (and `.`, `..` are no folders of their own).
    match encoded.strip_prefix('.') {
        Some(rest) => format!("%2E{rest}"),
        None => encoded,
    }
}

/// The class a folder named `folder` holds: its name with `%XX` sequences decoded. A `%` not
/// followed by two hex digits stays as it is, as does a name whose decoding is not UTF-8.
pub fn class_of_folder(folder: &str) -> String {
    percent_decode_str(folder)
        .decode_utf8()
        .map_or_else(|_| folder.to_string(), |name| name.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_name_makes_one_plain_folder_and_comes_back() {
        let names = [
            "7",
            "T-shirt/top",
            "x\\y",
            "a/b",
            ".",
            "..",
            ".hidden",
            "100%",
            "a%2Fb",
            "a:b*?",
            "é ü",
            "tab\there",
            "<|>",
            "%",
        ];
        let mut folders = Vec::new();
        for name in names {
            let folder = folder_of_class(name);
            assert!(
                !folder.is_empty()
                    && !folder.starts_with('.')
                    && !folder.contains(['/', '\\', '\0', ':', '\t']),
                "{name:?} -> {folder:?}"
            );
            assert_eq!(class_of_folder(&folder), name, "{folder:?}");
            folders.push(folder);
        }
        folders.sort();
        folders.dedup();
        assert_eq!(folders.len(), names.len(), "two classes share a folder");
        // Plain names stay as they are.
        assert_eq!(folder_of_class("T-shirt"), "T-shirt");
        assert_eq!(folder_of_class("x\\y"), "x%5Cy");
        assert_eq!(class_of_folder("100%"), "100%");
        assert_eq!(class_of_folder("%FF"), "%FF");
    }
}
