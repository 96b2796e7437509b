//! Keeping an LLM's answer to the knowledge it was given: the top chunks as numbered passages, and
//! the reply checked afterwards. Only citations of passages that were given count; an answer
//! that cites none, or says it cannot answer, is a decline, never shown as an answer. Pure
//! functions, so the rules are tested without a model.

use crate::bot::answer::Answer;
use crate::knowledge::retrieval::KnowledgeHit;

/// Longest passage text given to the model, in characters: keeps prompts small (prompt
/// processing dominates a small local model's latency) while a help-centre section fits.
pub const PASSAGE_CHARS: usize = 600;

/// The first `count` hits as numbered passages, `[1] Title: text`, one per line.
pub fn passages(hits: &[KnowledgeHit], count: usize) -> String {
    hits.iter()
        .take(count)
        .enumerate()
        .map(|(index, hit)| {
            let chunk = &hit.chunk;
            let text: String = chunk.text.split_whitespace().collect::<Vec<_>>().join(" ");
            let text = crate::bot::answer::trim_to_sentences(&text, PASSAGE_CHARS);
            format!("[{}] {}: {}", index + 1, chunk.display_title(), text)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the model wrote, judged against the `given` passages (numbered from 1).
pub fn judge(raw: &str, given: usize, decline_marker: &str) -> Answer {
    let text = raw.trim();
    if text.is_empty() {
        return Answer::Declined {
            why: "empty_answer".into(),
        };
    }
    if says_it_cannot_answer(text, decline_marker) {
        return Answer::Declined {
            why: "model_declined".into(),
        };
    }
    let text = without_echoed_passages(text);
    let (text, cited) = keep_valid_citations(&text, given);
    if cited.is_empty() {
        return Answer::Declined {
            why: "no_valid_citation".into(),
        };
    }
    Answer::Written { text, cited }
}

/// The text without lines that copy the passage format (`[1] Title: ...`): small models echo
/// their input, and an echoed passage is neither an answer nor a citation of one.
fn without_echoed_passages(text: &str) -> String {
    text.lines()
        .filter(|line| {
            let line = line.trim_start();
            let Some(rest) = line.strip_prefix('[') else {
                return true;
            };
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            !(digits > 0 && rest[digits..].starts_with("] "))
        })
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

/// The numbers in `answer` (digit runs, citation markers aside) that appear neither in the
/// passages it cites nor in the question: a price, a date or a time limit the model made up.
/// Small models cite a passage and then write their own figures; this catches the commonest
/// harmful kind of invention.
pub fn unsupported_numbers(answer: &str, cited_passages: &[&str], question: &str) -> Vec<String> {
    let mut without_citations = String::with_capacity(answer.len());
    let mut copied = 0;
    for (range, numbers) in bracket_groups(answer) {
        if numbers.is_some() {
            without_citations.push_str(&answer[copied..range.start]);
            copied = range.end;
        }
    }
    without_citations.push_str(&answer[copied..]);
    let mut support: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for text in cited_passages.iter().chain(std::iter::once(&question)) {
        support.extend(digit_runs(text));
    }
    let mut unsupported: Vec<String> = Vec::new();
    for run in digit_runs(&without_citations) {
        if !support.contains(run) && !unsupported.iter().any(|u| u == run) {
            unsupported.push(run.to_string());
        }
    }
    unsupported
}

fn digit_runs(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|run| !run.is_empty())
}

/// Phrases small and large models use instead of the marker they were asked for.
const CANNOT_ANSWER: &[&str] = &[
    "i don't know",
    "i do not know",
    "i cannot answer",
    "i can't answer",
    "i am unable to answer",
    "i'm unable to answer",
    "passages do not",
    "passages don't",
    "not mentioned in the passages",
    "no information",
];

fn says_it_cannot_answer(text: &str, decline_marker: &str) -> bool {
    let lower = text.to_lowercase();
    (!decline_marker.is_empty() && lower.contains(&decline_marker.to_lowercase()))
        || CANNOT_ANSWER.iter().any(|phrase| lower.contains(phrase))
}

/// Each `[...]` in `text`: its byte range (brackets included) and, when it is a citation (`[2]`,
/// `[1, 3]`), the numbers in it.
fn bracket_groups(text: &str) -> Vec<(std::ops::Range<usize>, Option<Vec<usize>>)> {
    let mut groups = Vec::new();
    let mut offset = 0;
    while let Some(open) = text[offset..].find('[').map(|o| offset + o) {
        let Some(close) = text[open..].find(']').map(|c| open + c) else {
            break;
        };
        let inside = &text[open + 1..close];
        let numbers: Option<Vec<usize>> = inside
            .split(',')
            .map(|part| part.trim().parse::<usize>().ok())
            .collect();
        groups.push((
            open..close + 1,
            numbers.filter(|_| !inside.trim().is_empty()),
        ));
        offset = close + 1;
    }
    groups
}

/// The text with citations of passages that were not given removed, and the (0-based) indexes
/// of the passages cited, in the order first cited. Understands `[2]`, `[1][3]` and `[1, 3]`.
pub fn keep_valid_citations(text: &str, given: usize) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(text.len());
    let mut cited: Vec<usize> = Vec::new();
    let mut copied = 0;
    for (range, numbers) in bracket_groups(text) {
        // Not a citation ("[sic]", "[]"): kept as written.
        let Some(numbers) = numbers else {
            continue;
        };
        let before = &text[copied..range.start];
        let valid: Vec<usize> = numbers
            .into_iter()
            .filter(|n| (1..=given).contains(n))
            .collect();
        if valid.is_empty() {
            // An invented source: drop the marker and the space before it.
            out.push_str(before.trim_end_matches(' '));
        } else {
            out.push_str(before);
            let labels: Vec<String> = valid.iter().map(|n| n.to_string()).collect();
            out.push_str(&format!("[{}]", labels.join(", ")));
            for n in valid {
                if !cited.contains(&(n - 1)) {
                    cited.push(n - 1);
                }
            }
        }
        copied = range.end;
    }
    out.push_str(&text[copied..]);
    (out.trim().to_string(), cited)
}

/// Every passage number cited in `text`, valid or not, in order (for measuring how often a
/// model cites passages it was not given).
pub fn citation_numbers(text: &str) -> Vec<usize> {
    bracket_groups(text)
        .into_iter()
        .flat_map(|(_, numbers)| numbers.unwrap_or_default())
        .collect()
}

/// How much of a streamed answer may be shown yet: nothing while it could still turn out to be
/// the decline marker, so a customer never sees "NO_ANS..." flash past.
pub fn showable_prefix(so_far: &str, decline_marker: &str) -> bool {
    let head = so_far.trim_start().to_lowercase();
    let marker = decline_marker.to_lowercase();
    if marker.is_empty() {
        return true;
    }
    !head.is_empty() && !head.starts_with(&marker) && !marker.starts_with(&head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn citations_of_given_passages_count_and_invented_ones_go() {
        let (text, cited) = keep_valid_citations("Refunds take 5 days [2]. Ask first [1][7].", 2);
        assert_eq!(text, "Refunds take 5 days [2]. Ask first [1].");
        assert_eq!(cited, vec![1, 0]);
        let (text, cited) = keep_valid_citations("Shipping is free [1, 3, 9].", 3);
        assert_eq!(text, "Shipping is free [1, 3].");
        assert_eq!(cited, vec![0, 2]);
        let (text, cited) = keep_valid_citations("See [sic] and [] and [0] here [4]", 3);
        assert_eq!(text, "See [sic] and [] and here");
        assert!(cited.is_empty());
    }

    #[test]
    fn an_answer_citing_nothing_or_saying_it_cannot_is_a_decline() {
        let declined = |raw: &str| match judge(raw, 3, "NO_ANSWER") {
            Answer::Declined { why } => why,
            written => panic!("{raw:?} was accepted: {written:?}"),
        };
        assert_eq!(declined("NO_ANSWER"), "model_declined");
        assert_eq!(declined("  no_answer."), "model_declined");
        assert_eq!(declined("Sorry, I don't know that [1]."), "model_declined");
        assert_eq!(
            declined("The capital of Peru is Lima."),
            "no_valid_citation"
        );
        assert_eq!(declined("Lima [4]."), "no_valid_citation");
        assert_eq!(declined("   "), "empty_answer");
        // An echoed passage is not a citation.
        assert_eq!(
            declined("Yes, you can pay in Bitcoin.\n\n[1] Paying: You can pay with a card."),
            "no_valid_citation"
        );
        assert_eq!(
            judge("Pay by card [1].\n[2] Cards: Visa.", 3, "NO_ANSWER"),
            Answer::Written {
                text: "Pay by card [1].".into(),
                cited: vec![0]
            }
        );
        assert_eq!(
            judge("Refunds take five days [1].", 3, "NO_ANSWER"),
            Answer::Written {
                text: "Refunds take five days [1].".into(),
                cited: vec![0]
            }
        );
    }

    #[test]
    fn numbers_not_in_the_cited_passages_or_the_question_are_reported() {
        let passage = "Express delivery costs £9.95 and arrives the next working day before 14:00.";
        assert!(unsupported_numbers("Express costs £9.95 [1].", &[passage], "").is_empty());
        assert_eq!(
            unsupported_numbers("Express costs £4.95 and takes 2 days [1].", &[passage], ""),
            vec!["4", "2"]
        );
        // The citation markers and the customer's own numbers are not inventions.
        assert!(
            unsupported_numbers("Order 12345 ships at 14:00 [3].", &[passage], "order 12345")
                .is_empty()
        );
    }

    #[test]
    fn a_stream_is_held_back_while_it_could_be_the_marker() {
        assert!(!showable_prefix("", "NO_ANSWER"));
        assert!(!showable_prefix(" NO_", "NO_ANSWER"));
        assert!(!showable_prefix("NO_ANSWER", "NO_ANSWER"));
        assert!(showable_prefix("Refunds", "NO_ANSWER"));
        assert!(showable_prefix("No, refunds are not possible", "NO_ANSWER"));
        assert!(showable_prefix("anything", ""));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever the model writes, every citation kept is of a passage that was given, and
        /// each cited passage is counted once.
        #[test]
        fn kept_citations_are_always_valid(raw in ".{0,200}", given in 0usize..6) {
            let (text, cited) = keep_valid_citations(&raw, given);
            prop_assert!(cited.iter().all(|&index| index < given));
            let mut unique = cited.clone();
            unique.sort_unstable();
            unique.dedup();
            prop_assert_eq!(unique.len(), cited.len());
            prop_assert!(text.len() <= raw.len() + 8 * cited.len());
        }
    }
}
