//! The business's own words, and what a message says outside them.
//!
//! Customers misspell ("chnage my pasword", "wheres my parcle", "canel my plus plan"). The
//! encoder's word pieces turn such words into noise, and a short message can lose its meaning
//! to one typo. A word that is neither one of the business's words (its intents and its
//! knowledge base) nor a word the encoder's vocabulary knows is corrected to the business word
//! one edit away (a letter added, dropped, changed, or two swapped), the most frequent when
//! there are several. Words the encoder knows are never corrected: "bulk" is not a typo of
//! "bulb".
//!
//! What is left, content words the business never uses ("alexa" in "does the thermostat work with
//! alexa?"), is reported as unfamiliar: the bot can then ask whether the question turns on one of
//! them, which the help centre cannot answer whatever article comes closest.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rust_stemmers::{Algorithm, Stemmer};

/// Shorter words are left alone: one edit away from a short word is too many other words.
const MIN_CORRECTED_CHARS: usize = 4;

/// How much more frequent a business word must be than a business word one edit away for the
/// rarer one to count as its misspelling.
const TYPO_FREQUENCY_RATIO: u32 = 3;

/// Words that say nothing of what a question is about; never unfamiliar.
const FUNCTION_WORDS: &[&str] = &[
    "about",
    "after",
    "again",
    "also",
    "anyone",
    "anything",
    "anyway",
    "because",
    "been",
    "before",
    "being",
    "cant",
    "could",
    "didnt",
    "does",
    "doesnt",
    "doing",
    "dont",
    "each",
    "even",
    "from",
    "have",
    "having",
    "hello",
    "here",
    "into",
    "just",
    "know",
    "like",
    "many",
    "more",
    "most",
    "much",
    "need",
    "only",
    "other",
    "please",
    "really",
    "same",
    "should",
    "some",
    "something",
    "still",
    "than",
    "thank",
    "thanks",
    "that",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "this",
    "those",
    "very",
    "want",
    "were",
    "what",
    "whats",
    "when",
    "where",
    "which",
    "while",
    "will",
    "with",
    "wont",
    "would",
    "your",
    "youre",
];

/// The vocabulary the bot reads messages against. Cheap to query; rebuilt when the intents or
/// the knowledge base change.
pub struct Vocabulary {
    /// The business's words (lower-case) and how often they occur.
    business: HashMap<String, u32>,
    /// Stems of the business's words: "thermostats" is familiar when "thermostat" is.
    business_stems: HashSet<String>,
    /// Whole words the encoder's tokenizer knows.
    general: Arc<HashSet<String>>,
    stemmer: Stemmer,
}

/// What the vocabulary makes of one message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// The message with its typos corrected, when there were any.
    pub corrected: Option<String>,
    /// (as written, as corrected), in order.
    pub corrections: Vec<(String, String)>,
    /// Content words that are none of the business's words (after correction), in order.
    pub unfamiliar: Vec<String>,
}

impl Vocabulary {
    /// `general`: the whole words the encoder's tokenizer knows (its vocabulary without word
    /// pieces); `business`: the words of the intents' examples and descriptions and of the
    /// knowledge base, counted with [`count_words`].
    pub fn new(general: Arc<HashSet<String>>, business: HashMap<String, u32>) -> Self {
        let stemmer = Stemmer::create(Algorithm::English);
        let business_stems = business
            .keys()
            .map(|word| stemmer.stem(word).into_owned())
            .collect();
        Vocabulary {
            business,
            business_stems,
            general,
            stemmer,
        }
    }

    pub fn business_words(&self) -> usize {
        self.business.len()
    }

    fn is_business_word(&self, word: &str) -> bool {
        self.business.contains_key(word) || self.business_stems.contains(&*self.stemmer.stem(word))
    }

    /// Correct the typos of a message and name its unfamiliar words.
    pub fn read(&self, text: &str) -> Reading {
        let mut reading = Reading::default();
        let mut corrected = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(|c: char| c.is_alphabetic()) {
            corrected.push_str(&rest[..start]);
            let word_len = rest[start..]
                .find(|c: char| !c.is_alphabetic())
                .unwrap_or(rest.len() - start);
            let word = &rest[start..start + word_len];
            rest = &rest[start + word_len..];
            let lower = word.to_lowercase();
            // A word glued to digits or an apostrophe ("i've", "4mins") is left as written.
            let glued = rest.starts_with(|c: char| c.is_alphanumeric() || c == '\'')
                || corrected.ends_with(|c: char| c.is_alphanumeric() || c == '\'');
            if glued
                || lower.chars().count() < MIN_CORRECTED_CHARS
                || FUNCTION_WORDS.contains(&lower.as_str())
            {
                corrected.push_str(word);
                continue;
            }
            if !self.general.contains(&lower) {
                if let Some(fix) = self.correction(&lower) {
                    reading.corrections.push((word.to_string(), fix.clone()));
                    corrected.push_str(&fix);
                    continue;
                }
            }
            if self.is_business_word(&lower) {
                corrected.push_str(word);
                continue;
            }
            reading.unfamiliar.push(lower);
            corrected.push_str(word);
        }
        corrected.push_str(rest);
        if !reading.corrections.is_empty() {
            reading.corrected = Some(corrected);
        }
        reading
    }

    /// The most frequent business word one edit away (ties: the alphabetically first, so the
    /// answer does not depend on hash order). A business word can be a typo too: intents files
    /// carry customers' misspellings as examples ("pasword reset"), so a word is corrected when
    /// its neighbour is at least [`TYPO_FREQUENCY_RATIO`] times as frequent.
    fn correction(&self, word: &str) -> Option<String> {
        let length = word.chars().count();
        let own = self.business.get(word).copied().unwrap_or(0);
        let stem = self.stemmer.stem(word);
        self.business
            .iter()
            .filter(|(_, count)| **count >= own.saturating_mul(TYPO_FREQUENCY_RATIO).max(1))
            .filter(|(candidate, _)| candidate.chars().count().abs_diff(length) <= 1)
            .filter(|(candidate, _)| candidate.chars().count() >= MIN_CORRECTED_CHARS)
            .filter(|(candidate, _)| one_edit_apart(word, candidate))
            // Another form of the same word ("radiator", "radiators") is not a typo.
            .filter(|(candidate, _)| self.stemmer.stem(candidate) != stem)
            .max_by(|(a, count_a), (b, count_b)| count_a.cmp(count_b).then_with(|| b.cmp(a)))
            .map(|(candidate, _)| candidate.clone())
    }
}

/// Add the words of `texts` (lower-cased) to `counts`.
pub fn count_words<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    counts: &mut HashMap<String, u32>,
) {
    for text in texts {
        for word in words(text) {
            *counts.entry(word.to_lowercase()).or_default() += 1;
        }
    }
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphabetic())
        .filter(|word| !word.is_empty())
}

/// Damerau-Levenshtein distance exactly 1: one letter inserted, deleted or substituted, or two
/// neighbours swapped.
fn one_edit_apart(a: &str, b: &str) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a == b {
        return false;
    }
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let (a_rest, b_rest) = (&a[prefix..], &b[prefix..]);
    match a.len() as isize - b.len() as isize {
        0 => {
            a_rest[1..] == b_rest[1..]
                || (a_rest.len() >= 2
                    && a_rest[0] == b_rest[1]
                    && a_rest[1] == b_rest[0]
                    && a_rest[2..] == b_rest[2..])
        }
        1 => a_rest[1..] == *b_rest,
        -1 => *a_rest == b_rest[1..],
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocabulary() -> Vocabulary {
        let general = [
            "how", "do", "i", "change", "my", "where", "is", "bulk", "bulb", "alexa", "work",
            "the", "with", "discount", "parcel", "there", "two",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let mut business = HashMap::new();
        count_words(
            [
                "How do I change my password? Change the email on my account.",
                "Where is my parcel? Track your parcel.",
                "I want to cancel my subscription. Cancel Plus. Cancel it. Canel my plan.",
                "Does the thermostat work with my boiler? Replace the bulb.",
            ],
            &mut business,
        );
        Vocabulary::new(Arc::new(general), business)
    }

    #[test]
    fn typos_become_the_business_word_one_edit_away() {
        let reading = vocabulary().read("how do i chnage my pasword");
        assert_eq!(
            reading.corrected.as_deref(),
            Some("how do i change my password")
        );
        assert_eq!(
            reading.corrections,
            vec![
                ("chnage".to_string(), "change".to_string()),
                ("pasword".to_string(), "password".to_string())
            ]
        );
        assert!(reading.unfamiliar.is_empty(), "{reading:?}");
        let reading = vocabulary().read("Wheres my PARCLE??");
        assert_eq!(reading.corrected.as_deref(), Some("Wheres my parcel??"));
        let reading = vocabulary().read("canel my plus plan");
        assert_eq!(reading.corrected.as_deref(), Some("cancel my plus plan"));
    }

    #[test]
    fn words_the_encoder_knows_are_not_typos_but_can_be_unfamiliar() {
        let reading = vocabulary().read("is there a bulk discount?");
        assert_eq!(reading.corrected, None, "bulk stays bulk");
        assert_eq!(reading.unfamiliar, vec!["bulk", "discount"]);
        let reading = vocabulary().read("does the thermostat work with alexa?");
        assert_eq!(reading.unfamiliar, vec!["alexa"]);
        // Plurals and other forms of business words are familiar, and not corrected.
        let reading = vocabulary().read("two thermostats");
        assert!(reading.unfamiliar.is_empty());
        assert_eq!(reading.corrected, None);
    }

    #[test]
    fn short_glued_and_function_words_are_left_alone() {
        let vocabulary = vocabulary();
        let reading = vocabulary.read("i've got 4mins, whats up");
        assert_eq!(reading.corrected, None);
        assert!(reading.unfamiliar.is_empty(), "{reading:?}");
        assert_eq!(vocabulary.read("").corrected, None);
        assert_eq!(vocabulary.read("!!! ...").unfamiliar, Vec::<String>::new());
    }

    #[test]
    fn one_edit_means_exactly_one() {
        assert!(one_edit_apart("canel", "cancel"));
        assert!(one_edit_apart("chnage", "change"));
        assert!(one_edit_apart("parcle", "parcel"));
        assert!(one_edit_apart("pasword", "password"));
        assert!(one_edit_apart("bulk", "bulb"));
        assert!(!one_edit_apart("parcel", "parcel"));
        assert!(!one_edit_apart("alexa", "alerts"));
        assert!(!one_edit_apart("abcd", "badc"));
    }
}
