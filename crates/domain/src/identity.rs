//! Identifiers, each a type with one rule: parsed once at the edge, so an invalid value
//! cannot exist past parsing. Each error's text is the description a refusal gives its
//! field.

use std::{fmt, ops::Deref};

/// Checks an 18-character resident id number: 17 digits and an ISO 7064 MOD 11-2 check
/// character (`0`-`9` or `X`).
pub fn id_number_is_valid(id: &str) -> bool {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let bytes = id.as_bytes();
    if bytes.len() != 18 || !bytes[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = bytes[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    bytes[17].to_ascii_uppercase() == CHECK[(sum % 11) as usize]
}

/// Checks a person id: the insured place's own number, opaque, 1 to 30 printable ASCII
/// characters.
pub fn person_id_is_valid(id: &str) -> bool {
    PersonId::parse(id).is_ok()
}

/// Why an identifier was refused: the rule it breaks, as a field's description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must be 1 to 30 printable characters")]
    PersonId,
    #[error("must be 1 to 64 printable characters")]
    ClaimId,
    #[error("must be at most 64 printable ASCII characters")]
    RequestId,
    #[error("is required (1 to 64 printable ASCII characters): the call is idempotent by it")]
    RequestIdRequired,
    #[error("must be an 18-character id number with a valid check digit")]
    IdNumber,
}

fn printable(text: &str, max: usize) -> bool {
    (1..=max).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

identifier!(
    /// The insured place's own number for a person: opaque, 1 to 30 printable ASCII
    /// characters.
    PersonId
);
identifier!(
    /// A claim's id, unique within its treatment region: 1 to 64 printable ASCII
    /// characters.
    ClaimId
);
identifier!(
    /// The id that makes a write idempotent: 1 to 64 printable ASCII characters.
    RequestId
);
identifier!(
    /// An 18-character resident id number with its check character, upper case.
    IdNumber
);

impl PersonId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        printable(text, 30)
            .then(|| Self(text.to_string()))
            .ok_or(IdError::PersonId)
    }
}

impl ClaimId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        printable(text, 64)
            .then(|| Self(text.to_string()))
            .ok_or(IdError::ClaimId)
    }
}

impl RequestId {
    /// An optional request id: empty is none.
    pub fn parse(text: &str) -> Result<Option<Self>, IdError> {
        if text.is_empty() {
            return Ok(None);
        }
        printable(text, 64)
            .then(|| Some(Self(text.to_string())))
            .ok_or(IdError::RequestId)
    }

    /// A request id the call cannot do without.
    pub fn required(text: &str) -> Result<Self, IdError> {
        match Self::parse(text) {
            Ok(Some(id)) => Ok(id),
            _ => Err(IdError::RequestIdRequired),
        }
    }
}

impl IdNumber {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        id_number_is_valid(text)
            .then(|| Self(text.to_ascii_uppercase()))
            .ok_or(IdError::IdNumber)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_number_check_digit() {
        assert!(id_number_is_valid("11010519491231002X"));
        assert!(id_number_is_valid("11010519491231002x"));
        assert!(id_number_is_valid("440524188001010014"));
        assert!(!id_number_is_valid("110105194912310021"));
        assert!(!id_number_is_valid("11010519491231002"));
        assert!(!id_number_is_valid("1101051949123100XX"));
    }

    #[test]
    fn each_identifier_has_one_rule() {
        assert_eq!(ClaimId::parse("C-1").unwrap().as_str(), "C-1");
        assert_eq!(ClaimId::parse(""), Err(IdError::ClaimId));
        assert_eq!(ClaimId::parse(&"c".repeat(65)), Err(IdError::ClaimId));
        assert_eq!(ClaimId::parse("c 1"), Err(IdError::ClaimId));
        assert_eq!(RequestId::parse(""), Ok(None));
        assert_eq!(RequestId::parse("r\u{e9}"), Err(IdError::RequestId));
        assert_eq!(RequestId::required(""), Err(IdError::RequestIdRequired));
        assert_eq!(
            IdNumber::parse("11010519491231002x").unwrap().as_str(),
            "11010519491231002X"
        );
        assert_eq!(PersonId::parse(&"p".repeat(31)), Err(IdError::PersonId));
    }

    #[test]
    fn person_ids() {
        assert!(person_id_is_valid("P-0001"));
        assert!(!person_id_is_valid(""));
        assert!(!person_id_is_valid(&"x".repeat(31)));
        assert!(!person_id_is_valid("a b"));
    }
}
