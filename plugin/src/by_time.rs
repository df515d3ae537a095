//! A map from an instant (Unix seconds) to a value, in time order: the
//! ledger's buckets, running totals and days, and what Stripe holds per
//! interval for reconcile.
//!
//! A sorted `Vec` rather than `BTreeMap`: each value type instantiates the
//! whole B-tree (about 5 KB of the component each, five of them), where a
//! sorted `Vec` is a binary search and an insert. The maps are small: their
//! keys are points of one run's grid (Amberflo's buckets are checked to be on
//! it, inside the window and listed once) or its days, and they arrive in
//! time order, so an insert is almost always a push.

use crate::prelude::*;

/// Instant → `V`, in time order, each instant once.
#[derive(Debug, Clone, PartialEq)]
pub struct ByTime<V>(Vec<(i64, V)>);

impl<V> Default for ByTime<V> {
    fn default() -> Self {
        ByTime(Vec::new())
    }
}

impl<V> ByTime<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    fn find(&self, t: i64) -> Result<usize, usize> {
        // The common case first: a key past every other.
        match self.0.last() {
            Some(&(last, _)) if last < t => Err(self.0.len()),
            None => Err(0),
            _ => self.0.binary_search_by_key(&t, |e| e.0),
        }
    }

    /// The value at `t`.
    pub fn get(&self, t: i64) -> Option<&V> {
        self.find(t).ok().map(|i| &self.0[i].1)
    }

    /// The value at `t`, to change.
    pub fn get_mut(&mut self, t: i64) -> Option<&mut V> {
        self.find(t).ok().map(|i| &mut self.0[i].1)
    }

    /// The value at `t`, made by `make` if there is none.
    pub fn entry(&mut self, t: i64, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(t) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (t, make()));
                i
            }
        };
        &mut self.0[i].1
    }

    /// Sets the value at `t`.
    pub fn insert(&mut self, t: i64, value: V) {
        match self.find(t) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (t, value)),
        }
    }

    /// Keeps the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(i64, &V) -> bool) {
        self.0.retain(|(t, v)| keep(*t, v));
    }

    /// The entries from `start` (included) to `end` (excluded), in order.
    pub fn range(&self, start: i64, end: i64) -> &[(i64, V)] {
        let from = self.find(start).unwrap_or_else(|i| i);
        let to = self.find(end).unwrap_or_else(|i| i).max(from);
        &self.0[from..to]
    }

    /// The values, in time order.
    pub fn into_values(self) -> impl Iterator<Item = V> {
        self.0.into_iter().map(|(_, v)| v)
    }
}

impl<V> IntoIterator for ByTime<V> {
    type Item = (i64, V);
    type IntoIter = alloc::vec::IntoIter<(i64, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// As `BTreeMap` collects: the last value of an instant wins.
impl<V> FromIterator<(i64, V)> for ByTime<V> {
    fn from_iter<I: IntoIterator<Item = (i64, V)>>(entries: I) -> Self {
        let mut map = ByTime::new();
        for (t, v) in entries {
            map.insert(t, v);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the order and repeats of what goes in, it reads as a
        /// `BTreeMap` given the same would.
        #[test]
        fn reads_as_a_btreemap_does(
            ops in prop::collection::vec((0u8..4, -20i64..20, any::<u16>()), 0..200),
            start in -25i64..25,
            len in 0i64..30,
        ) {
            let mut ours = ByTime::new();
            let mut theirs = BTreeMap::new();
            for (op, t, v) in ops {
                match op {
                    0 => { ours.insert(t, v); theirs.insert(t, v); }
                    1 => {
                        let x = ours.entry(t, || 0);
                        *x = x.wrapping_add(1);
                        let y = theirs.entry(t).or_insert(0);
                        *y = y.wrapping_add(1);
                    }
                    2 => {
                        ours.retain(|k, _| k != t);
                        theirs.retain(|&k, _| k != t);
                    }
                    3 if v % 2 == 0 => {
                        if let Some(x) = ours.get_mut(t) { *x = x.wrapping_add(7); }
                        if let Some(x) = theirs.get_mut(&t) { *x = x.wrapping_add(7); }
                    }
                    _ => prop_assert_eq!(ours.get(t), theirs.get(&t)),
                }
            }
            let range: Vec<(i64, u16)> = theirs.range(start..(start + len)).map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(ours.range(start, start + len), &range[..]);
            let all: Vec<(i64, u16)> = theirs.into_iter().collect();
            prop_assert_eq!(ours.into_iter().collect::<Vec<_>>(), all);
        }
    }

    #[test]
    fn the_last_value_of_an_instant_wins_when_collected() {
        let map: ByTime<u8> = [(2, 1), (1, 5), (2, 3)].into_iter().collect();
        assert_eq!(map.into_iter().collect::<Vec<_>>(), [(1, 5), (2, 3)]);
    }
}
