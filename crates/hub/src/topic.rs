//! Topic names: 1 to 128 characters of `[A-Za-z0-9_.:-]`.

use std::fmt;
use std::sync::Arc;

/// The longest topic name, in characters (bytes: the alphabet is ASCII).
pub const MAX_TOPIC_LEN: usize = 128;

/// A valid topic name. Cheap to clone (shared).
///
/// ```
/// use fullduplex_hub::Topic;
/// assert!(Topic::new("chat.room-1:en").is_ok());
/// assert!(Topic::new("").is_err());
/// assert!(Topic::new("a b").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

/// Why a string is not a topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The name is empty.
    #[error("topic name is empty")]
    Empty,
    /// The name is longer than [`MAX_TOPIC_LEN`].
    #[error("topic name is longer than {MAX_TOPIC_LEN} characters")]
    TooLong,
    /// The name has a character outside `[A-Za-z0-9_.:-]`.
    #[error("topic name has a character outside [A-Za-z0-9_.:-] at position {0}")]
    BadCharacter(usize),
}

/// Whether `b` may appear in a topic name.
fn is_topic_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

impl Topic {
    /// Checks `name` and makes a topic of it.
    pub fn new(name: &str) -> Result<Topic, TopicError> {
        Topic::check(name)?;
        Ok(Topic(Arc::from(name)))
    }

    /// Checks `name` without allocating.
    pub fn check(name: &str) -> Result<(), TopicError> {
        if name.is_empty() {
            return Err(TopicError::Empty);
        }
        if let Some(position) = name.bytes().position(|b| !is_topic_byte(b)) {
            // A position in characters, for humans.
            let chars = name[..position].chars().count();
            return Err(TopicError::BadCharacter(chars));
        }
        if name.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong);
        }
        Ok(())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for name in ["a", "chat", "A-z_0.9:x", &"x".repeat(MAX_TOPIC_LEN)] {
            assert_eq!(Topic::new(name).map(|t| t.to_string()), Ok(name.to_owned()));
        }
    }

    #[test]
    fn invalid_names() {
        assert_eq!(Topic::new(""), Err(TopicError::Empty));
        assert_eq!(
            Topic::new(&"x".repeat(MAX_TOPIC_LEN + 1)),
            Err(TopicError::TooLong)
        );
        assert_eq!(Topic::new("a b"), Err(TopicError::BadCharacter(1)));
        assert_eq!(Topic::new("ab/"), Err(TopicError::BadCharacter(2)));
        assert_eq!(Topic::new("é"), Err(TopicError::BadCharacter(0)));
        assert_eq!(Topic::new("aé*"), Err(TopicError::BadCharacter(1)));
        assert_eq!(Topic::new("a\"b"), Err(TopicError::BadCharacter(1)));
        assert_eq!(Topic::new("a\nb"), Err(TopicError::BadCharacter(1)));
    }
}
