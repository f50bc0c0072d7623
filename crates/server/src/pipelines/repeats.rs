//! Warnings a loop would repeat on every pass (a tunnel its host keeps refusing, a replica
//! left off a gateway): the first of a kind is a warning, its repeats are debug lines, and it
//! warns again once the error changes or after the thing worked in between.

use std::collections::HashMap;

use crate::state::lock;

/// How many failing things are remembered; past this the memory starts over (a forgotten one
/// warns once more).
const REMEMBERED: usize = 1024;

/// The last error reported for each failing thing, by key.
#[derive(Default)]
pub(crate) struct Repeats(std::sync::Mutex<HashMap<String, String>>);

impl Repeats {
    /// Whether `error` for `key` is news: not what was last reported for it.
    pub(crate) fn is_new(&self, key: &str, error: &str) -> bool {
        let mut last = lock(&self.0);
        if last.get(key).is_some_and(|e| e == error) {
            return false;
        }
        if last.len() >= REMEMBERED {
            last.clear();
        }
        last.insert(key.to_owned(), error.to_owned());
        true
    }

    /// `key` worked: its next error is news again.
    pub(crate) fn clear(&self, key: &str) {
        lock(&self.0).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_news_once_until_it_changes_or_clears() {
        let repeats = Repeats::default();
        assert!(repeats.is_new("tunnel a", "refused"));
        assert!(!repeats.is_new("tunnel a", "refused"), "the same error again");
        assert!(repeats.is_new("tunnel b", "refused"), "another key");
        assert!(repeats.is_new("tunnel a", "timed out"), "another error");
        assert!(!repeats.is_new("tunnel a", "timed out"));
        repeats.clear("tunnel a");
        assert!(repeats.is_new("tunnel a", "timed out"), "after it worked");
        for i in 0..REMEMBERED {
            repeats.is_new(&format!("k{i}"), "e");
        }
        assert!(lock(&repeats.0).len() <= REMEMBERED, "bounded");
    }
}
