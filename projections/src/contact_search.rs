//! Finding contacts by name, e-mail or phone through a blind index: the read model
//! keeps keyed hashes of each contact's normalized name words, e-mail address and phone
//! digits (`rm_contact_terms`), never a searchable copy in clear, and a search hashes
//! its words the same way. Matching is exact per word, address or number (no prefix,
//! no fuzziness); see ADR 0006.

use crate::keyring::Keyring;

/// Fewest digits a phone number search needs (shorter runs would match too much).
const PHONE_DIGITS: usize = 5;

/// The terms a contact is found by.
pub fn terms_of(keyring: &Keyring, name: Option<&str>, email: Option<&str>, phone: Option<&str>) -> Vec<String> {
    let mut terms: Vec<String> =
        name.map(|n| words(n).map(|w| term(keyring, "name", &w)).collect()).unwrap_or_default();
    terms.extend(email.map(|e| term(keyring, "email", &e.trim().to_lowercase())));
    terms.extend(phone.and_then(digits).map(|d| term(keyring, "phone", &d)));
    terms.sort();
    terms.dedup();
    terms
}

/// The terms a search asks for, every one of which a contact must have: an e-mail
/// address, a phone number, or the words of a name. `None` if it holds none of these.
pub fn query(keyring: &Keyring, text: &str) -> Option<Vec<String>> {
    let text = text.trim();
    let terms: Vec<String> = if text.contains('@') {
        vec![term(keyring, "email", &text.to_lowercase())]
    } else if let Some(number) =
        digits(text).filter(|_| text.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c)))
    {
        vec![term(keyring, "phone", &number)]
    } else {
        words(text).map(|w| term(keyring, "name", &w)).collect()
    };
    (!terms.is_empty()).then_some(terms)
}

fn words(name: &str) -> impl Iterator<Item = String> + '_ {
    name.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

fn digits(phone: &str) -> Option<String> {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    (digits.len() >= PHONE_DIGITS).then_some(digits)
}

fn term(keyring: &Keyring, kind: &str, value: &str) -> String {
    keyring.keyed_hash(&["contact-search", kind, value])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_is_found_by_any_name_word_its_address_or_its_number_and_nothing_is_in_clear() {
        let keyring = Keyring::new([5; 32]);
        let terms =
            terms_of(&keyring, Some("Maria Costa-Lima"), Some("Maria@Example.com"), Some("+55 (11) 99999-0000"));
        assert!(terms.iter().all(|t| !t.contains("maria") && !t.contains("9999")));
        let finds = |text: &str| query(&keyring, text).is_some_and(|q| q.iter().all(|t| terms.contains(t)));
        for text in ["maria", "COSTA", "lima maria", "maria@example.com", "5511999990000", "+55 11 99999 0000"] {
            assert!(finds(text), "{text} finds her");
        }
        for text in ["mari", "maria souza", "other@example.com", "99999"] {
            assert!(!finds(text), "{text} does not");
        }
        assert_eq!(query(&keyring, " -- "), None);
        assert_ne!(query(&Keyring::new([6; 32]), "maria"), query(&keyring, "maria"), "the hashes are keyed");
    }
}
