//! The channels one connection holds: a sorted vector, not a tree. Most
//! connections hold a few channels, and a tree's first node costs about
//! 200 bytes where a vector of one name costs a few dozen: per idle
//! connection, that is a twentieth of what it costs in all.

use std::sync::Arc;

/// Channel names in order, each once.
#[derive(Debug, Default)]
pub(super) struct Channels(Vec<Arc<str>>);

impl Channels {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|c| (**c).cmp(name))
    }

    /// Whether `name` is held.
    pub(super) fn contains(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// How many are held.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds `name`; false if it was held.
    pub(super) fn insert(&mut self, name: Arc<str>) -> bool {
        match self.find(&name) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, name);
                true
            }
        }
    }

    /// Removes `name` and gives it back, if it was held.
    pub(super) fn take(&mut self, name: &str) -> Option<Arc<str>> {
        let at = self.find(name).ok()?;
        let name = self.0.remove(at);
        if self.0.is_empty() {
            // A connection that left its channels holds no buffer.
            self.0 = Vec::new();
        }
        Some(name)
    }

    /// The names, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        self.0.iter()
    }
}

impl IntoIterator for Channels {
    type Item = Arc<str>;
    type IntoIter = std::vec::IntoIter<Arc<str>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_each_name_once_in_order() {
        let mut held = Channels::default();
        for name in ["b", "a", "c", "a"] {
            held.insert(Arc::from(name));
        }
        assert_eq!(held.len(), 3);
        assert!(held.contains("b") && !held.contains("d"));
        let names: Vec<&str> = held.iter().map(|c| &**c).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(held.take("b").as_deref(), Some("b"));
        assert_eq!(held.take("b"), None);
        let rest: Vec<Arc<str>> = held.into_iter().collect();
        assert_eq!(rest.len(), 2);
    }
}
