//! Masking of personal and payment data in free text, before it is stored, logged, sent to a
//! webhook or to any model: card numbers (Luhn-checked; the last four digits stay, as receipts
//! show them), CVV-like codes (three or four digits next to a word such as "CVV" or "security
//! code", or right after a card number), IBANs (mod-97 checked), email addresses and phone
//! numbers. Each kind can be switched off in `[privacy]`.
//!
//! A hand-written scanner rather than regular expressions: the checks (Luhn, mod 97, digit
//! counts across separators, what sits either side) are what decides, and they read more plainly
//! as code. Masking is idempotent: masked text contains nothing that would be masked again.

use serde::{Deserialize, Serialize};

/// Which kinds are masked (all by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacySettings {
    pub cards: bool,
    pub cvv: bool,
    pub ibans: bool,
    pub emails: bool,
    pub phones: bool,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self {
            cards: true,
            cvv: true,
            ibans: true,
            emails: true,
            phones: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PiiKind {
    Card,
    Cvv,
    Iban,
    Email,
    Phone,
}

impl PiiKind {
    pub const ALL: [PiiKind; 5] = [
        PiiKind::Card,
        PiiKind::Cvv,
        PiiKind::Iban,
        PiiKind::Email,
        PiiKind::Phone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Card => "card",
            PiiKind::Cvv => "cvv",
            PiiKind::Iban => "iban",
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
        }
    }
}

/// Masked text and what was masked in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked {
    pub text: String,
    pub found: Vec<PiiKind>,
}

/// Words after which a short number is a card security code.
const CVV_WORDS: [&str; 7] = [
    "cvv",
    "cvc",
    "cvv2",
    "cvc2",
    "cid",
    "security code",
    "card code",
];

/// How far (in characters) a CVV may sit after its keyword or after the card number.
const CVV_REACH: usize = 24;

#[derive(Debug, Clone, Copy, Default)]
pub struct Masker {
    settings: PrivacySettings,
}

/// A stretch of the text to replace.
struct Span {
    start: usize,
    end: usize,
    kind: PiiKind,
    replacement: String,
}

impl Masker {
    pub fn new(settings: PrivacySettings) -> Self {
        Self { settings }
    }

    /// The text with every enabled kind masked, and the kinds found (in order).
    pub fn mask(&self, text: &str) -> Masked {
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let mut spans = Vec::new();
        if self.settings.emails {
            spans.extend(find_emails(text, &chars));
        }
        if self.settings.ibans {
            let ibans: Vec<Span> = find_ibans(text, &chars)
                .into_iter()
                .filter(|s| free(&spans, s))
                .collect();
            spans.extend(ibans);
        }
        let numbers = find_digit_runs(text, &chars);
        let mut cards = Vec::new();
        for run in &numbers {
            let candidate = Span {
                start: run.start,
                end: run.end,
                kind: PiiKind::Card,
                replacement: String::new(),
            };
            if !free(&spans, &candidate) {
                continue;
            }
            if let Some((start, end, digits)) = self.settings.cards.then(|| run.card()).flatten() {
                cards.push(end);
                spans.push(Span {
                    start,
                    end,
                    kind: PiiKind::Card,
                    replacement: format!("[card ending {}]", &digits[digits.len() - 4..]),
                });
            } else if self.settings.phones && run.looks_like_phone() {
                spans.push(Span {
                    kind: PiiKind::Phone,
                    replacement: "[phone]".into(),
                    ..candidate
                });
            }
        }
        if self.settings.cvv {
            let lower = text.to_lowercase();
            // Lower-casing can change byte offsets for a few scripts; only use it when it did not.
            let keyword_ends: Vec<usize> = if lower.len() == text.len() {
                CVV_WORDS
                    .iter()
                    .flat_map(|word| {
                        lower
                            .match_indices(word)
                            .filter(|(at, w)| word_bounded(&lower, *at, at + w.len()))
                            .map(|(at, w)| at + w.len())
                            .collect::<Vec<_>>()
                    })
                    .collect()
            } else {
                Vec::new()
            };
            // Each group of a number is a candidate: "exp 12/27 737" reads as the number
            // "27 737" after the slash.
            let groups = numbers.iter().flat_map(|run| run.groups.iter());
            for (group_start, group_end, group_digits) in groups {
                let run = Span {
                    start: *group_start,
                    end: *group_end,
                    kind: PiiKind::Cvv,
                    replacement: String::new(),
                };
                if !(3..=4).contains(&group_digits.len()) {
                    continue;
                }
                // Not part of a date or an amount ("12/27", "3.50").
                let before = text[..run.start].chars().next_back();
                let after = text[run.end..].chars().next();
                let digit_follows = text[run.end..]
                    .chars()
                    .nth(1)
                    .is_some_and(|c| c.is_ascii_digit());
                let part_of_other_number =
                    matches!(before, Some('/' | '.' | ',' | '$' | '£' | '€'))
                        || after == Some('%')
                        || (matches!(after, Some('/' | '.' | ',')) && digit_follows);
                if part_of_other_number {
                    continue;
                }
                let near = |anchor: usize| {
                    anchor <= run.start && text[anchor..run.start].chars().count() <= CVV_REACH
                };
                if keyword_ends.iter().any(|&end| near(end)) || cards.iter().any(|&end| near(end)) {
                    let candidate = Span {
                        start: run.start,
                        end: run.end,
                        kind: PiiKind::Cvv,
                        replacement: "[cvv]".into(),
                    };
                    if free(&spans, &candidate) {
                        spans.push(candidate);
                    }
                }
            }
        }
        if spans.is_empty() {
            return Masked {
                text: text.to_string(),
                found: Vec::new(),
            };
        }
        spans.sort_by_key(|s| s.start);
        let mut masked = String::with_capacity(text.len());
        let mut at = 0;
        let mut found = Vec::with_capacity(spans.len());
        for span in spans {
            masked.push_str(&text[at..span.start]);
            masked.push_str(&span.replacement);
            at = span.end;
            found.push(span.kind);
        }
        masked.push_str(&text[at..]);
        Masked {
            text: masked,
            found,
        }
    }

    /// Just the masked text.
    pub fn mask_text(&self, text: &str) -> String {
        self.mask(text).text
    }
}

/// Whether `candidate` overlaps none of `spans`.
fn free(spans: &[Span], candidate: &Span) -> bool {
    spans
        .iter()
        .all(|s| candidate.end <= s.start || candidate.start >= s.end)
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn word_bounded(text: &str, start: usize, end: usize) -> bool {
    !text[..start].chars().next_back().is_some_and(is_word_char)
        && !text[end..].chars().next().is_some_and(is_word_char)
}

/// Digits written as one number, possibly split by single spaces, dashes, dots or brackets
/// ("4111 1111 1111 1111", "+44 (0)20 7946 0958", "555-123-4567").
struct DigitRun {
    start: usize,
    end: usize,
    digits: String,
    plus: bool,
    separators: Vec<char>,
    /// Each group of digits between separators: byte start, byte end, its digits.
    groups: Vec<(usize, usize, String)>,
}

impl DigitRun {
    /// The card number in this run: the whole run, or else the longest stretch of whole groups
    /// (a card written next to another number: "2 4111 1111 1111 1111") with 13 to 19 digits
    /// that passes Luhn. Byte start, byte end and the digits.
    fn card(&self) -> Option<(usize, usize, String)> {
        if (13..=19).contains(&self.digits.len()) && luhn(&self.digits) {
            return Some((self.start, self.end, self.digits.clone()));
        }
        let mut best: Option<(usize, usize, String)> = None;
        for first in 0..self.groups.len() {
            let mut digits = String::new();
            for last in first..self.groups.len() {
                digits.push_str(&self.groups[last].2);
                if digits.len() > 19 {
                    break;
                }
                let longer = best.as_ref().is_none_or(|b| digits.len() > b.2.len());
                if digits.len() >= 13 && longer && luhn(&digits) {
                    best = Some((self.groups[first].0, self.groups[last].1, digits.clone()));
                }
            }
        }
        best
    }

    fn looks_like_phone(&self) -> bool {
        let digits = self.digits.len();
        // Four dot-separated groups of up to three digits is an IPv4 address, not a phone.
        let ipv4 = self.groups.len() == 4
            && !self.separators.is_empty()
            && self.separators.iter().all(|&c| c == '.')
            && self.digits.len() <= 12;
        let dotted_decimal =
            self.groups.len() == 2 && self.separators.iter().all(|&c| c == '.' || c == ',');
        !ipv4 && !dotted_decimal && (10..=15).contains(&digits)
            || (self.plus && (8..=15).contains(&digits))
    }
}

fn find_digit_runs(text: &str, chars: &[(usize, char)]) -> Vec<DigitRun> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        let starts_number = c.is_ascii_digit()
            || ((c == '+' || c == '(')
                && chars.get(i + 1).is_some_and(|(_, n)| n.is_ascii_digit()));
        let glued = i > 0 && {
            let prev = chars[i - 1].1;
            is_word_char(prev) || prev == '+' || (prev.is_ascii_digit())
        };
        if !starts_number || glued {
            i += 1;
            continue;
        }
        let start = at;
        let plus = c == '+';
        let mut digits = String::new();
        let mut separators = Vec::new();
        let mut groups: Vec<(usize, usize, String)> = Vec::new();
        let mut in_group = false;
        let mut end = at;
        let mut j = i;
        if c == '+' || c == '(' {
            j += 1;
        }
        while j < chars.len() {
            let (pos, ch) = chars[j];
            if ch.is_ascii_digit() {
                digits.push(ch);
                if !in_group {
                    groups.push((pos, pos, String::new()));
                    in_group = true;
                }
                if let Some(group) = groups.last_mut() {
                    group.1 = pos + 1;
                    group.2.push(ch);
                }
                end = pos + 1;
                j += 1;
                continue;
            }
            // A single separator (or a bracket pair's edges) followed by a digit continues the
            // number; anything else ends it.
            let next_is_digit = |k: usize| chars.get(k).is_some_and(|(_, n)| n.is_ascii_digit());
            let continues = match ch {
                ' ' | '-' | '.' => {
                    next_is_digit(j + 1) || chars.get(j + 1).is_some_and(|(_, n)| *n == '(')
                }
                '(' => next_is_digit(j + 1),
                ')' => {
                    next_is_digit(j + 1)
                        || (chars.get(j + 1).is_some_and(|(_, n)| *n == ' ')
                            && next_is_digit(j + 2))
                }
                _ => false,
            };
            if !continues {
                break;
            }
            if ch == ')' {
                end = pos + 1;
            }
            separators.push(ch);
            in_group = false;
            j += 1;
        }
        // The number must not run on into a word ("123abc"); when its last group does
        // ("4111 1111 1111 1111 04GB"), the groups before it still form a number.
        let mut after = text[end..].chars().next();
        while after.is_some_and(is_word_char) && groups.len() > 1 {
            groups.pop();
            separators.pop();
            end = groups.last().map_or(end, |g| g.1);
            digits = groups.iter().map(|g| g.2.as_str()).collect();
            after = text[end..].chars().next();
        }
        if !after.is_some_and(is_word_char) && !digits.is_empty() {
            // A bracket that closed nothing is not part of the number.
            let start = if c == '(' && !text[start..end].contains(')') {
                start + 1
            } else {
                start
            };
            runs.push(DigitRun {
                start,
                end,
                digits,
                plus,
                separators,
                groups,
            });
        }
        i = j.max(i + 1);
    }
    runs
}

fn luhn(digits: &str) -> bool {
    let mut sum = 0;
    for (index, c) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(c - b'0');
        if index % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

fn find_emails(text: &str, chars: &[(usize, char)]) -> Vec<Span> {
    let local_char = |c: char| c.is_alphanumeric() || "._%+-'".contains(c);
    let domain_char = |c: char| c.is_alphanumeric() || c == '-' || c == '.';
    let mut spans = Vec::new();
    let mut resume = 0;
    for (i, &(at, c)) in chars.iter().enumerate() {
        if c != '@' || at < resume {
            continue;
        }
        let mut first = i;
        while first > 0 && local_char(chars[first - 1].1) {
            first -= 1;
        }
        let mut last = i + 1;
        while last < chars.len() && domain_char(chars[last].1) {
            last += 1;
        }
        let start = chars.get(first).map(|&(p, _)| p).unwrap_or(at);
        let end = chars.get(last).map(|&(p, _)| p).unwrap_or(text.len());
        let local = text[start..at].trim_start_matches(['.', '\'']);
        let domain = text[at + 1..end].trim_end_matches(['.', '-']);
        let start = at - local.len();
        let end = at + 1 + domain.len();
        let tld = domain.rsplit('.').next().unwrap_or_default();
        let labels_ok = domain.split('.').all(|l| !l.is_empty());
        if !local.is_empty()
            && domain.contains('.')
            && labels_ok
            && tld.chars().count() >= 2
            && tld.chars().all(char::is_alphabetic)
        {
            spans.push(Span {
                start,
                end,
                kind: PiiKind::Email,
                replacement: "[email]".into(),
            });
            resume = end;
        }
    }
    spans
}

/// IBAN: two letters, two check digits, 11 to 30 letters and digits, possibly in groups of four;
/// the mod-97 check decides.
fn find_ibans(text: &str, chars: &[(usize, char)]) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i + 4 <= chars.len() {
        let window: Vec<char> = chars[i..i + 4].iter().map(|&(_, c)| c).collect();
        let boundary = i == 0 || !is_word_char(chars[i - 1].1);
        if !(boundary
            && window[0].is_ascii_alphabetic()
            && window[1].is_ascii_alphabetic()
            && window[2].is_ascii_digit()
            && window[3].is_ascii_digit())
        {
            i += 1;
            continue;
        }
        // Gather alphanumerics, allowing single spaces between groups, and remember every
        // place the IBAN could end.
        let mut compact = String::new();
        let mut ends = Vec::new();
        let mut j = i;
        while j < chars.len() && compact.len() < 34 {
            let c = chars[j].1;
            if c.is_ascii_alphanumeric() {
                compact.push(c.to_ascii_uppercase());
                j += 1;
                let at_boundary = chars.get(j).is_none_or(|&(_, n)| !is_word_char(n));
                if at_boundary {
                    ends.push((
                        compact.len(),
                        chars.get(j).map(|&(p, _)| p).unwrap_or(text.len()),
                    ));
                }
            } else if c == ' '
                && chars
                    .get(j + 1)
                    .is_some_and(|&(_, n)| n.is_ascii_alphanumeric())
                && !compact.is_empty()
            {
                j += 1;
            } else {
                break;
            }
        }
        let found = ends
            .iter()
            .rev()
            .find(|&&(len, _)| (15..=34).contains(&len) && iban_valid(&compact[..len]));
        match found {
            Some(&(len, end)) => {
                spans.push(Span {
                    start: chars[i].0,
                    end,
                    kind: PiiKind::Iban,
                    replacement: format!("[iban ending {}]", &compact[len - 4..len]),
                });
                i = chars
                    .iter()
                    .position(|&(p, _)| p >= end)
                    .unwrap_or(chars.len());
            }
            None => i += 1,
        }
    }
    spans
}

fn iban_valid(compact: &str) -> bool {
    let rearranged = compact[4..].chars().chain(compact[..4].chars());
    let mut remainder: u32 = 0;
    for c in rearranged {
        let value = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A'..='Z' => c as u32 - 'A' as u32 + 10,
            _ => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(text: &str) -> String {
        Masker::default().mask_text(text)
    }

    #[test]
    fn card_numbers_keep_their_last_four_and_must_pass_luhn() {
        assert_eq!(
            mask("my card 4111 1111 1111 1111 was charged"),
            "my card [card ending 1111] was charged"
        );
        assert_eq!(mask("4111-1111-1111-1111"), "[card ending 1111]");
        assert_eq!(mask("card:5500005555555559."), "card:[card ending 5559].");
        assert_eq!(mask("amex 378282246310005"), "amex [card ending 0005]");
        // Sixteen digits failing Luhn: an order or tracking number, left alone.
        assert_eq!(
            mask("tracking 4111 1111 1111 1112"),
            "tracking 4111 1111 1111 1112"
        );
    }

    #[test]
    fn cvv_codes_are_masked_next_to_their_word_or_after_a_card() {
        assert_eq!(mask("the CVV is 123"), "the CVV is [cvv]");
        assert_eq!(mask("security code: 4821"), "security code: [cvv]");
        assert_eq!(
            mask("4111111111111111 exp 12/27 737"),
            "[card ending 1111] exp 12/27 [cvv]"
        );
        // Three-digit numbers elsewhere stay: prices, models, counts.
        assert_eq!(mask("I paid 129 for the T300"), "I paid 129 for the T300");
        assert_eq!(mask("cvv 12/27"), "cvv 12/27");
    }

    #[test]
    fn ibans_are_checked_with_mod_97() {
        assert_eq!(
            mask("refund to DE89 3704 0044 0532 0130 00 please"),
            "refund to [iban ending 3000] please"
        );
        assert_eq!(mask("GB82WEST12345698765432"), "[iban ending 5432]");
        // One digit off fails the check.
        assert_eq!(mask("GB82WEST12345698765433"), "GB82WEST12345698765433");
    }

    #[test]
    fn emails_and_phone_numbers_are_masked() {
        assert_eq!(
            mask("write to jane.doe+support@example.co.uk."),
            "write to [email]."
        );
        assert_eq!(mask("call +44 20 7946 0958 today"), "call [phone] today");
        assert_eq!(mask("(555) 123-4567"), "[phone]");
        assert_eq!(mask("555.123.4567 or 07700900123"), "[phone] or [phone]");
        assert_eq!(
            mask("not an email: a@b, x@localhost"),
            "not an email: a@b, x@localhost"
        );
    }

    #[test]
    fn ordinary_numbers_stay() {
        for text in [
            "order 10234 arrived on 2026-12-03",
            "the device at 192.168.100.200 is offline",
            "firmware 2.14.3, set to 21.5 degrees",
            "serial T300-884213",
            "it costs $1,299.00",
            "12:30 tomorrow",
        ] {
            assert_eq!(mask(text), text);
        }
    }

    #[test]
    fn kinds_can_be_switched_off_and_masking_is_idempotent() {
        let masker = Masker::new(PrivacySettings {
            emails: false,
            ..PrivacySettings::default()
        });
        let masked = masker.mask("a@example.com paid with 4111111111111111");
        assert_eq!(masked.text, "a@example.com paid with [card ending 1111]");
        assert_eq!(masked.found, vec![PiiKind::Card]);
        let all = Masker::default();
        let once = all.mask_text("4111111111111111 cvv 123 +1 555 123 4567 a@b.io");
        assert_eq!(all.mask_text(&once), once);
    }

    /// Thousands of random texts made of the characters the scanner cares about (digits,
    /// separators, brackets, '@', '+', letters, multi-byte characters): no panic, masking is
    /// idempotent, and no card number that passes Luhn survives.
    #[test]
    fn random_text_never_panics_and_no_card_survives() {
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> = "0123456789 -.()+@/,:abcxyzDEGB€é\n".chars().collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let masker = Masker::default();
        for round in 0..5000 {
            let length = rng.gen_range(0..80);
            let mut text: String = (0..length)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            if round % 3 == 0 {
                // Plant a real card number, with or without spaces.
                let at = rng.gen_range(0..=text.chars().count());
                let card = if round % 2 == 0 {
                    " 4111 1111 1111 1111 "
                } else {
                    " 5500005555555559 "
                };
                let byte = text
                    .char_indices()
                    .nth(at)
                    .map(|(b, _)| b)
                    .unwrap_or(text.len());
                text.insert_str(byte, card);
            }
            let once = masker.mask_text(&text);
            assert_eq!(masker.mask_text(&once), once, "{text:?}");
            let digits_only: String = once
                .split(|c: char| !c.is_ascii_digit() && c != ' ' && c != '-')
                .collect::<Vec<_>>()
                .join("|");
            for part in digits_only.split('|') {
                let digits: String = part.chars().filter(char::is_ascii_digit).collect();
                assert!(
                    !(digits.contains("4111111111111111") || digits.contains("5500005555555559")),
                    "a card survived in {once:?} (from {text:?})"
                );
            }
        }
    }
}
