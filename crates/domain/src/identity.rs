//! Person identifiers.

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
    (1..=30).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
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
    fn person_ids() {
        assert!(person_id_is_valid("P-0001"));
        assert!(!person_id_is_valid(""));
        assert!(!person_id_is_valid(&"x".repeat(31)));
        assert!(!person_id_is_valid("a b"));
    }
}
