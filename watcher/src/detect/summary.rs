//! What a finding says. Each detector declares, in its own file, the facts
//! of its findings as one typed struct per kind (or a few, for findings that
//! say different things): its `Display` is the summary sentence a person
//! reads, its `Serialize` the details a program reads — one set of facts,
//! written once. Process names (`pid 4121 (python3 app.py) in container web`)
//! come pre-rendered: naming a process is the world's job ([`super::who`],
//! [`super::who_in`], [`super::port_shadowed::holder_name`]). Resolutions
//! are sentences only (a resolved record keeps the incident's last details).
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

/// What an open or updated finding says, from one set of facts gathered by
/// its detector: the summary sentence a person reads (`Display`) and the
/// details a program reads (`Serialize`: every field but those marked
/// `#[serde(skip)]`).
pub trait Facts: fmt::Display + Serialize {
    /// The summary and the details.
    fn said(&self) -> (String, super::Details) {
        let details = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        (self.to_string(), details.into())
    }
}

impl<T: fmt::Display + Serialize> Facts for T {}

/// A sentence written only if it is read: `Lazy(|f| write!(f, …))` costs
/// nothing on the hot path when no incident is there to take it (a clean
/// exit could end a crash loop; almost every one does not).
pub(crate) struct Lazy<F>(pub(crate) F);

impl<F: Fn(&mut fmt::Formatter<'_>) -> fmt::Result> fmt::Display for Lazy<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (self.0)(f)
    }
}

/// A duration kept in ns, said in the details in seconds
/// (`#[serde(rename = "…_s", serialize_with = "seconds")]`).
pub(crate) fn seconds<S: serde::Serializer>(ns: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(*ns as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Example {
        #[serde(skip)]
        who: String,
        port: u16,
    }

    impl fmt::Display for Example {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} cannot bind {}", self.who, self.port)
        }
    }

    #[test]
    fn facts_say_a_sentence_and_details_from_the_same_fields() {
        let (summary, details) = Example {
            who: "pid 9 (nginx)".into(),
            port: 80,
        }
        .said();
        assert_eq!(summary, "pid 9 (nginx) cannot bind 80");
        assert_eq!(
            serde_json::Value::Object((*details).clone()),
            serde_json::json!({"port": 80})
        );
    }
}
