//! Topic names as consumed records carry them: interned once per process, then copied as a
//! pointer.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock};

/// A topic's name, interned for the life of the process: copying or dropping one costs nothing,
/// and two are equal when they point at the same name.
///
/// A [`ConsumerRecord`](super::ConsumerRecord) names its topic with one. It held an `Arc<str>`:
/// a clone when the record was built and a drop when it was, two atomic operations per record
/// (each a full memory barrier on x86), and a tenth of a consumer's CPU (issue #14).
///
/// The price: every distinct name interned stays in memory until the process exits (the name, at
/// most 249 bytes, and a map entry). A process interns the topics it consumes from; one that
/// consumes from an endless series of new topics grows by a name for each.
#[derive(Clone, Copy)]
pub struct TopicName(&'static Arc<str>);

/// Every name interned so far, by its text.
fn interned() -> &'static Mutex<HashMap<&'static str, &'static Arc<str>>> {
    static NAMES: OnceLock<Mutex<HashMap<&'static str, &'static Arc<str>>>> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

impl TopicName {
    /// The interned name `name`, interning it on first use.
    pub fn new(name: &str) -> Self {
        Self::intern(name, || Arc::from(name))
    }

    /// The interned name for `name`, interning `name` itself (not a copy) on first use.
    pub fn from_arc(name: &Arc<str>) -> Self {
        Self::intern(name, || name.clone())
    }

    fn intern(name: &str, make: impl FnOnce() -> Arc<str>) -> Self {
        // A poisoned lock still holds a consistent map: entries are only ever added, whole.
        let mut names = interned().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&arc) = names.get(name) {
            return TopicName(arc);
        }
        let arc: &'static Arc<str> = Box::leak(Box::new(make()));
        names.insert(&**arc, arc);
        TopicName(arc)
    }

    /// The name's text.
    pub fn as_str(&self) -> &'static str {
        self.0
    }

    /// The name as the `Arc<str>` a [`TopicPartition`](crate::types::TopicPartition) holds: a
    /// reference count, not a copy.
    pub fn to_arc(&self) -> Arc<str> {
        self.0.clone()
    }
}

/// The interned name of the last topic asked for, found again only when the topic changes (a
/// lookup takes the global lock and hashes the name): a take of records asks once per record,
/// and consecutive records share their partition's name, the same `Arc`.
#[derive(Default)]
pub(super) struct LastTopic(Option<(*const u8, TopicName)>);

impl LastTopic {
    #[inline]
    pub(super) fn name(&mut self, topic: &Arc<str>) -> TopicName {
        match self.0 {
            Some((at, name)) if at == topic.as_ptr() => name,
            _ => self.0.insert((topic.as_ptr(), TopicName::from_arc(topic))).1,
        }
    }
}

impl Deref for TopicName {
    type Target = str;

    fn deref(&self) -> &str {
        self.0
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        self.0
    }
}

// One interned name per text: the same name is the same pointer.
impl PartialEq for TopicName {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for TopicName {}

// As `str` hashes, as `Borrow<str>` requires.
impl Hash for TopicName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for TopicName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TopicName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialEq<str> for TopicName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for TopicName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for TopicName {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Arc<str>> for TopicName {
    fn eq(&self, other: &Arc<str>) -> bool {
        self.as_str() == &**other
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<&str> for TopicName {
    fn from(name: &str) -> Self {
        TopicName::new(name)
    }
}

impl From<String> for TopicName {
    fn from(name: String) -> Self {
        TopicName::new(&name)
    }
}

impl From<&Arc<str>> for TopicName {
    fn from(name: &Arc<str>) -> Self {
        TopicName::from_arc(name)
    }
}

impl From<Arc<str>> for TopicName {
    fn from(name: Arc<str>) -> Self {
        TopicName::from_arc(&name)
    }
}

impl From<TopicName> for Arc<str> {
    fn from(name: TopicName) -> Self {
        name.to_arc()
    }
}

impl From<TopicName> for String {
    fn from(name: TopicName) -> Self {
        name.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_is_interned_once_however_it_comes() {
        let arc: Arc<str> = Arc::from("topic-name-interned-once");
        let a = TopicName::from_arc(&arc);
        let b = TopicName::new("topic-name-interned-once");
        let c: TopicName = String::from("topic-name-interned-once").into();
        assert!(std::ptr::eq(a.as_str(), b.as_str()) && std::ptr::eq(b.as_str(), c.as_str()));
        assert_eq!(a, b);
        // The first Arc given is the one kept: its clones are reference counts, not copies.
        assert!(Arc::ptr_eq(&a.to_arc(), &arc));
        assert!(Arc::ptr_eq(&c.to_arc(), &arc));
    }

    #[test]
    fn names_compare_hash_and_print_as_their_text() {
        use std::collections::hash_map::DefaultHasher;
        let (x, y) = (TopicName::new("topic-name-x"), TopicName::new("topic-name-y"));
        assert_ne!(x, y);
        assert!(x < y);
        assert_eq!(x, "topic-name-x");
        assert_eq!(x, *"topic-name-x");
        assert_eq!(x, String::from("topic-name-x"));
        assert_eq!(x.to_string(), "topic-name-x");
        assert_eq!(format!("{x:?}"), "\"topic-name-x\"");
        let hash = |h: &dyn Fn(&mut DefaultHasher)| {
            let mut s = DefaultHasher::new();
            h(&mut s);
            s.finish()
        };
        assert_eq!(hash(&|s| x.hash(s)), hash(&|s| "topic-name-x".hash(s)));
        let set: std::collections::HashSet<TopicName> = [x, y, TopicName::new("topic-name-x")].into();
        assert_eq!(set.len(), 2);
        assert!(set.contains("topic-name-y"));
    }
}
