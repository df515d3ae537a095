//! Stable sorting by instants, with one sort for every item type.
//!
//! Each `sort_by_key` call site instantiates the standard library's stable
//! sort for its item type: about 4 KB of the component each. Here what is
//! sorted is `(key, position)`, the same type for every caller (the position
//! makes the faster unstable sort keep equal keys in their order), and the
//! items then move once.

use crate::prelude::*;

/// `keys` in order, each with its position among them: equal keys keep
/// theirs, as a stable sort keeps them. The one sort every caller shares.
pub fn sorted_positions(keys: impl Iterator<Item = (i64, i64)>) -> Vec<(i64, i64, usize)> {
    let mut order: Vec<(i64, i64, usize)> = keys.enumerate().map(|(i, (a, b))| (a, b, i)).collect();
    if !order.is_sorted() {
        order.sort_unstable();
    }
    order
}

/// Sorts `items` by `key`, keeping the order of items with equal keys, as
/// `items.sort_by_key(key)` does.
pub fn sort_by_times<T>(items: &mut Vec<T>, key: impl Fn(&T) -> (i64, i64)) {
    let order = sorted_positions(items.iter().map(key));
    if order.iter().enumerate().all(|(i, o)| o.2 == i) {
        return;
    }
    let mut slots: Vec<Option<T>> = core::mem::take(items).into_iter().map(Some).collect();
    items.extend(order.into_iter().filter_map(|(_, _, i)| slots[i].take()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The same order as the standard library's stable sort, equal keys
        /// included.
        #[test]
        fn sorts_as_sort_by_key_does(
            items in prop::collection::vec((-5i64..5, -3i64..3, any::<u32>()), 0..100),
        ) {
            let mut ours = items.clone();
            sort_by_times(&mut ours, |&(a, b, _)| (a, b));
            let mut theirs = items;
            theirs.sort_by_key(|&(a, b, _)| (a, b));
            prop_assert_eq!(ours, theirs);
        }
    }
}
