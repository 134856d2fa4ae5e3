//! Validation of operator input, with messages that say what to do.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum InvalidInput {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} {value:?} is invalid: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: String,
    },
}

/// Link names become etcd key segments and metric labels.
pub fn link_name(name: &str) -> Result<(), InvalidInput> {
    if name.is_empty() {
        return Err(InvalidInput::Empty { what: "link name" });
    }
    if name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(InvalidInput::Invalid {
            what: "link name",
            value: name.into(),
            why: "use 1 to 64 characters from [a-zA-Z0-9._-]".into(),
        });
    }
    Ok(())
}

/// Kafka's own topic name rules (Topic.validate in Apache Kafka).
pub fn topic_name(name: &str) -> Result<(), InvalidInput> {
    if name.is_empty() {
        return Err(InvalidInput::Empty { what: "topic name" });
    }
    let why = if name == "." || name == ".." {
        Some("\".\" and \"..\" are not allowed")
    } else if name.len() > 249 {
        Some("longer than 249 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        Some("Kafka topic names use only [a-zA-Z0-9._-]")
    } else {
        None
    };
    match why {
        Some(why) => Err(InvalidInput::Invalid {
            what: "topic name",
            value: name.into(),
            why: why.into(),
        }),
        None => Ok(()),
    }
}

/// Consumer group ids: Kafka takes any non-empty string; they become etcd
/// key segments and log fields here, so control characters are refused
/// and the length is bounded.
pub fn group_name(name: &str) -> Result<(), InvalidInput> {
    if name.is_empty() {
        return Err(InvalidInput::Empty { what: "group id" });
    }
    let why = if name.len() > 255 {
        Some("longer than 255 bytes")
    } else if name.chars().any(char::is_control) {
        Some("it has control characters")
    } else {
        None
    };
    match why {
        Some(why) => Err(InvalidInput::Invalid {
            what: "group id",
            value: name.into(),
            why: why.into(),
        }),
        None => Ok(()),
    }
}

/// `host:port` with a non-zero port.
pub fn bootstrap_server(addr: &str) -> Result<(), InvalidInput> {
    let invalid = |why: &str| InvalidInput::Invalid {
        what: "bootstrap server",
        value: addr.into(),
        why: why.into(),
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| invalid("expected host:port"))?;
    if host.is_empty() {
        return Err(invalid("host is empty"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(invalid("port must be a number from 1 to 65535")),
    }
}

/// Compiles a topic pattern anchored on the whole name, as operators expect
/// from MirrorMaker's topic filters.
pub fn topic_regex(pattern: &str) -> Result<regex::Regex, InvalidInput> {
    whole_name_regex("topic regex", pattern)
}

/// [`topic_regex`] for group ids.
pub fn group_regex(pattern: &str) -> Result<regex::Regex, InvalidInput> {
    whole_name_regex("group regex", pattern)
}

fn whole_name_regex(what: &'static str, pattern: &str) -> Result<regex::Regex, InvalidInput> {
    regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| InvalidInput::Invalid {
        what,
        value: pattern.into(),
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_are_anything_printable_and_bounded() {
        assert!(group_name("orders-app.v2 / eu").is_ok());
        assert_eq!(
            group_name(""),
            Err(InvalidInput::Empty { what: "group id" })
        );
        assert!(group_name("a\nb").is_err());
        assert!(group_name(&"g".repeat(256)).is_err());
        assert!(group_regex("orders-.*")
            .expect("regex")
            .is_match("orders-1"));
        assert!(!group_regex("orders").expect("regex").is_match("orders-1"));
        assert!(group_regex("(").is_err());
    }

    #[test]
    fn link_names() {
        assert!(link_name("prod-eu.1").is_ok());
        assert!(link_name("").is_err());
        assert!(link_name("a/b").is_err());
        assert!(link_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn topic_names_follow_kafka() {
        assert!(topic_name("orders_v2.x-1").is_ok());
        assert!(topic_name("..").is_err());
        assert!(topic_name("has space").is_err());
        assert!(topic_name(&"t".repeat(250)).is_err());
    }

    #[test]
    fn bootstrap_servers() {
        assert!(bootstrap_server("127.0.0.1:9092").is_ok());
        assert!(bootstrap_server("[::1]:9092").is_ok());
        assert!(bootstrap_server("localhost").is_err());
        assert!(bootstrap_server("host:0").is_err());
        assert!(bootstrap_server(":9092").is_err());
    }

    #[test]
    fn regex_is_anchored() {
        let r = topic_regex("orders.*").unwrap();
        assert!(r.is_match("orders.eu"));
        assert!(!r.is_match("x.orders"));
        assert!(topic_regex("(").is_err());
    }
}
