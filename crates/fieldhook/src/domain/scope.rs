//! API key scopes (api.md, "Authentication, accounts and scopes"): which scope
//! each call needs and what a granted scope implies.

use std::collections::BTreeSet;

/// Every scope a key can be granted, besides `*`.
pub const ALL_SCOPES: &[&str] = &[
    "jobs:read",
    "jobs:write",
    "clients:read",
    "clients:write",
    "sites:read",
    "sites:write",
    "users:read",
    "users:write",
    "webhooks:read",
    "webhooks:write",
    "api_keys:write",
];

/// The set of scopes a key holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(BTreeSet<String>);

impl Scopes {
    /// Parses and validates scope names; `Err` names the first unknown one.
    pub fn parse<I, S>(names: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = BTreeSet::new();
        for n in names {
            let n = n.as_ref().trim();
            if n != "*" && !ALL_SCOPES.contains(&n) {
                return Err(n.to_string());
            }
            set.insert(n.to_string());
        }
        Ok(Self(set))
    }

    /// The stored form: names separated by spaces.
    pub fn from_stored(s: &str) -> Self {
        Self(s.split_whitespace().map(str::to_string).collect())
    }

    pub fn to_stored(&self) -> String {
        self.names().collect::<Vec<_>>().join(" ")
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a call needing `needed` is allowed. `*` allows all; `x:write`
    /// implies `x:read`.
    pub fn allows(&self, needed: &str) -> bool {
        if self.0.contains("*") || self.0.contains(needed) {
            return true;
        }
        match needed.strip_suffix(":read") {
            Some(resource) => self.0.contains(&format!("{resource}:write")),
            None => false,
        }
    }

    /// Whether every scope of `other` is covered by `self`: a key can never
    /// grant more than the key that creates it holds.
    pub fn covers(&self, other: &Scopes) -> bool {
        if self.0.contains("*") {
            return true;
        }
        other.names().all(|n| n != "*" && self.allows(n))
    }

    /// The same scopes without `api_keys:write`, for temporary tokens; `*`
    /// is expanded so that everything else stays granted.
    pub fn without_key_management(&self) -> Scopes {
        let expanded: BTreeSet<String> =
            if self.0.contains("*") { ALL_SCOPES.iter().map(|s| s.to_string()).collect() } else { self.0.clone() };
        Scopes(expanded.into_iter().filter(|s| s != "api_keys:write").collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_implies_read_but_not_the_reverse() {
        let s = Scopes::parse(["jobs:write"]).unwrap();
        assert!(s.allows("jobs:read"));
        assert!(s.allows("jobs:write"));
        assert!(!s.allows("clients:read"));
        let r = Scopes::parse(["jobs:read"]).unwrap();
        assert!(!r.allows("jobs:write"));
    }

    #[test]
    fn star_allows_everything_and_covers_everything() {
        let star = Scopes::parse(["*"]).unwrap();
        assert!(star.allows("api_keys:write"));
        assert!(star.covers(&Scopes::parse(["*"]).unwrap()));
        let narrow = Scopes::parse(["jobs:write"]).unwrap();
        assert!(!narrow.covers(&Scopes::parse(["*"]).unwrap()));
        assert!(narrow.covers(&Scopes::parse(["jobs:read"]).unwrap()));
        assert!(!narrow.covers(&Scopes::parse(["clients:read"]).unwrap()));
    }

    #[test]
    fn unknown_scope_is_named() {
        assert_eq!(Scopes::parse(["jobs:read", "jobs:delete"]), Err("jobs:delete".into()));
    }

    #[test]
    fn temporary_tokens_never_manage_keys() {
        let t = Scopes::parse(["*"]).unwrap().without_key_management();
        assert!(t.allows("jobs:write"));
        assert!(!t.allows("api_keys:write"));
    }
}
