//! Text the component builds by hand for its size.

use crate::prelude::*;

/// `items` joined by `separator`, as `[&str]::join` would: by hand, since
/// the component's other joins are of `String`s and each item type
/// instantiates `join` (1 KB).
pub fn join<'a>(items: impl IntoIterator<Item = &'a str>, separator: &str) -> String {
    let mut out = String::new();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        out.push_str(item);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_as_slices_do() {
        for items in [&[][..], &["a"], &["a", "", "b"], &["", ""]] {
            assert_eq!(join(items.iter().copied(), ", "), items.join(", "));
        }
    }
}
