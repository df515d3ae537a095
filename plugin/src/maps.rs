//! Hash maps as `std` made them: hashbrown's table (which `std`'s `HashMap`
//! is), hashed by SipHash under keys drawn at random once per instance.
//!
//! Their keys come from the providers' answers. Under a fixed hash (what
//! hashbrown's own default is without `std`: its seed comes from addresses,
//! the same in every instance) a hostile answer could choose keys that
//! collide and make a run quadratic.

use crate::prelude::*;

use core::hash::BuildHasher;
use once_cell::race::OnceBox;

/// A hash map keyed at random (see the module).
pub type HashMap<K, V> = hashbrown::HashMap<K, V, RandomKeys>;

/// SipHash's two keys, drawn once per instance (as `std`'s `RandomState`
/// draws them once per thread).
#[derive(Clone, Copy, Debug)]
pub struct RandomKeys(u64, u64);

impl Default for RandomKeys {
    fn default() -> RandomKeys {
        static KEYS: OnceBox<RandomKeys> = OnceBox::new();
        *KEYS.get_or_init(|| {
            Box::new(RandomKeys(
                crate::ambient::random_u64(),
                crate::ambient::random_u64(),
            ))
        })
    }
}

// `core`'s SipHasher (SipHash-2-4) is deprecated in favour of `std`'s
// `DefaultHasher`, which a component without `std` does not have.
#[allow(deprecated)]
impl BuildHasher for RandomKeys {
    type Hasher = core::hash::SipHasher;

    fn build_hasher(&self) -> core::hash::SipHasher {
        core::hash::SipHasher::new_with_keys(self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drawn once: every map of an instance hashes a key alike.
    #[test]
    fn every_map_of_an_instance_shares_its_keys() {
        let (a, b) = (RandomKeys::default(), RandomKeys::default());
        assert_eq!(a.hash_one(42i64), b.hash_one(42i64));
        let mut map: HashMap<i64, &str> = HashMap::default();
        map.insert(7, "seven");
        assert_eq!(map.get(&7), Some(&"seven"));
    }
}
