//! The business's intents (`knowledge/intents.yaml`): parsing and validation. A file that cannot
//! be used (not YAML, an unknown field, a name defined twice, an intent with nothing to learn
//! from) is rejected with a message that names the file, the line and the problem. A file that
//! can be used but is weak (an intent with few examples, an example listed twice or under two
//! intents) trains, and each weakness is reported as an [`IntentsWarning`] with its line: small
//! teams write 2-15 examples per intent, and one thin intent must not stop the whole bot.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Fewer examples than this make an intent "thin": it trains, with a warning, and its examples
/// weigh less in the choice of the out-of-scope threshold (see `classifier::fit`).
pub const RECOMMENDED_EXAMPLES: usize = 5;

/// Whether a human must, may or must not take over conversations with this intent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HandoffMode {
    /// The policy decides from confidence, knowledge and the conversation.
    #[default]
    Auto,
    /// A human always takes it (complaints, cancellations, fraud).
    Always,
    /// The bot only (small talk).
    Never,
}

/// Order in the human queue.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

fn default_skill() -> String {
    "general".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntentSpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub examples: Vec<String>,
    /// The agent team that takes the conversation after a handoff.
    #[serde(default = "default_skill")]
    pub skill: String,
    #[serde(default)]
    pub handoff: HandoffMode,
    #[serde(default)]
    pub priority: Priority,
    /// A fixed reply (small talk such as greetings); without it the bot answers from knowledge.
    #[serde(default)]
    pub reply: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentsFile {
    pub intents: Vec<IntentSpec>,
    /// Optional examples of messages the business does NOT handle; used only to choose the
    /// out-of-scope threshold.
    #[serde(default)]
    pub out_of_scope: Vec<String>,
    /// What [`IntentsFile::parse`] found weak but usable, and what it did about it. Not part of
    /// the file format.
    #[serde(skip)]
    pub warnings: Vec<IntentsWarning>,
}

/// Something usable but weak in an intents file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentsWarning {
    /// 1-based line in the file, when it can be found.
    pub line: Option<usize>,
    pub kind: WarningKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// Fewer than [`RECOMMENDED_EXAMPLES`] examples.
    ThinIntent,
    /// No examples: the description is the only example.
    DescriptionOnly,
    /// The same example twice under one intent (kept once).
    DuplicateExample,
    /// The same example under two intents (kept under the first only).
    ConflictingExample,
    /// An out-of-scope example that is also an intent's example (dropped from out of scope).
    OutOfScopeConflict,
}

impl IntentsWarning {
    /// `origin line N: message`, as printed by the CLI and logged by the server.
    pub fn display(&self, origin: &str) -> String {
        match self.line {
            Some(line) => format!("{origin} line {line}: {}", self.message),
            None => format!("{origin}: {}", self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IntentsError {
    #[error("cannot read intents file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}{}: {reason}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Invalid {
        path: String,
        line: Option<usize>,
        reason: String,
    },
}

impl IntentsFile {
    pub fn read(path: &Path) -> Result<(Self, Vec<u8>), IntentsError> {
        let bytes = std::fs::read(path).map_err(|source| IntentsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let file = Self::parse(&bytes, &path.display().to_string())?;
        Ok((file, bytes))
    }

    /// Parse and validate. `origin` names the file in error messages.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self, IntentsError> {
        let invalid = |line: Option<usize>, reason: String| IntentsError::Invalid {
            path: origin.to_string(),
            line,
            reason,
        };
        let text =
            std::str::from_utf8(bytes).map_err(|e| invalid(None, format!("not UTF-8 ({e})")))?;
        let file: IntentsFile = serde_yaml::from_str(text)
            .map_err(|e| invalid(e.location().map(|l| l.line()), e.to_string()))?;
        // An intent's line is its `name:` line, when it can be found.
        let line_of = |name: &str| {
            find_line(text, &format!("name: {name}")).or_else(|| find_line(text, name))
        };

        if file.intents.len() < 2 {
            return Err(invalid(
                None,
                "at least 2 intents are needed to train a classifier".into(),
            ));
        }
        let mut file = file;
        let mut warnings = Vec::new();
        let mut names = HashSet::new();
        // Normalised example -> the intent that keeps it.
        let mut owner: HashMap<String, String> = HashMap::new();
        let mut lines = ExampleLines::new(text);
        for intent in &mut file.intents {
            let name = intent.name.trim().to_string();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(
                    line_of(&intent.name),
                    format!(
                        "intent name {:?} must be non-empty letters, digits, '_' or '-'",
                        intent.name
                    ),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(invalid(
                    line_of(&name),
                    format!("intent {name:?} is defined twice"),
                ));
            }
            if intent.skill.trim().is_empty() {
                return Err(invalid(
                    line_of(&name),
                    format!("intent {name:?} has an empty skill"),
                ));
            }
            if intent.reply.as_deref().is_some_and(|r| r.trim().is_empty()) {
                return Err(invalid(
                    line_of(&name),
                    format!("intent {name:?} has an empty reply"),
                ));
            }
            let mut kept = Vec::with_capacity(intent.examples.len());
            for example in std::mem::take(&mut intent.examples) {
                let trimmed = example.trim();
                if trimmed.is_empty() {
                    continue;
                }
                let line = lines.next_line_of(trimmed);
                match owner.get(&normalise_example(trimmed)) {
                    Some(first) if *first == name => warnings.push(IntentsWarning {
                        line,
                        kind: WarningKind::DuplicateExample,
                        message: format!(
                            "example {trimmed:?} is listed twice under {name:?}; it counts once"
                        ),
                    }),
                    Some(first) => warnings.push(IntentsWarning {
                        line,
                        kind: WarningKind::ConflictingExample,
                        message: format!(
                            "example {trimmed:?} is listed under both {first:?} and {name:?}; \
                             it trains {first:?} only (move or reword it)"
                        ),
                    }),
                    None => {
                        owner.insert(normalise_example(trimmed), name.clone());
                        kept.push(trimmed.to_string());
                    }
                }
            }
            intent.examples = kept;
            let description = intent
                .description
                .as_deref()
                .map(str::trim)
                .filter(|d| !d.is_empty());
            match (intent.examples.len(), description) {
                (0, None) => {
                    return Err(invalid(
                        line_of(&name),
                        format!(
                            "intent {name:?} has no examples and no description: give it at least one example message"
                        ),
                    ))
                }
                (0, Some(description)) => {
                    // The description becomes a training example, so it must not train another
                    // intent too (two description-only intents with one description, say).
                    if let Some(first) = owner.get(&normalise_example(description)) {
                        return Err(invalid(
                            line_of(&name),
                            format!(
                                "intent {name:?} has no examples and its description is also an example of {first:?}: give it example messages of its own"
                            ),
                        ));
                    }
                    owner.insert(normalise_example(description), name.clone());
                    warnings.push(IntentsWarning {
                        line: line_of(&name),
                        kind: WarningKind::DescriptionOnly,
                        message: format!(
                            "intent {name:?} has no examples; its description is its only example (add real customer messages)"
                        ),
                    });
                    intent.examples.push(description.to_string());
                }
                (count, _) if count < RECOMMENDED_EXAMPLES => warnings.push(IntentsWarning {
                    line: line_of(&name),
                    kind: WarningKind::ThinIntent,
                    message: format!(
                        "intent {name:?} has {count} example{}; {RECOMMENDED_EXAMPLES} or more make it reliable",
                        if count == 1 { "" } else { "s" }
                    ),
                }),
                _ => {}
            }
        }
        let mut out_of_scope = Vec::with_capacity(file.out_of_scope.len());
        for example in std::mem::take(&mut file.out_of_scope) {
            let trimmed = example.trim();
            if trimmed.is_empty() {
                continue;
            }
            if let Some(intent) = owner.get(&normalise_example(trimmed)) {
                warnings.push(IntentsWarning {
                    line: lines.next_line_of(trimmed),
                    kind: WarningKind::OutOfScopeConflict,
                    message: format!(
                        "out-of-scope example {trimmed:?} is also an example of {intent:?}; it is not used as out of scope"
                    ),
                });
                continue;
            }
            out_of_scope.push(trimmed.to_string());
        }
        file.out_of_scope = out_of_scope;
        file.warnings = warnings;
        Ok(file)
    }

    pub fn get(&self, name: &str) -> Option<&IntentSpec> {
        self.intents.iter().find(|i| i.name == name)
    }
}

/// 1-based line of the first line mentioning `needle` (best effort, for error messages).
fn find_line(text: &str, needle: &str) -> Option<usize> {
    text.lines()
        .position(|line| line.contains(needle))
        .map(|i| i + 1)
}

/// How examples are compared for duplicates: case and inner whitespace do not count.
fn normalise_example(example: &str) -> String {
    example
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Finds the line of each example in file order, so the second copy of a duplicated example is
/// reported at its own line rather than at the first one's (also inside a flow list such as
/// `[a, b, a]`, where one line holds many examples).
struct ExampleLines<'a> {
    lines: Vec<&'a str>,
    /// (line index, example) -> copies of the example on that line already attributed.
    used: HashMap<(usize, String), usize>,
}

impl<'a> ExampleLines<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            lines: text.lines().collect(),
            used: HashMap::new(),
        }
    }

    /// The first line (1-based) with a copy of `example` not yet attributed.
    fn next_line_of(&mut self, example: &str) -> Option<usize> {
        for (index, line) in self.lines.iter().enumerate() {
            let copies = line.matches(example).count();
            if copies == 0 {
                continue;
            }
            let used = self.used.entry((index, example.to_string())).or_insert(0);
            if *used < copies {
                *used += 1;
                return Some(index + 1);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
intents:
  - name: refund
    examples: [refund please, money back, return my money, I want a refund, get my cash back]
    skill: billing
  - name: human_agent
    examples: [a human, real person, agent please, talk to someone, operator]
    handoff: always
    priority: high
out_of_scope: [what's the weather]
"#;

    #[test]
    fn parses_with_defaults() {
        let file = IntentsFile::parse(GOOD.as_bytes(), "intents.yaml").unwrap();
        assert_eq!(file.intents.len(), 2);
        let refund = file.get("refund").unwrap();
        assert_eq!(refund.handoff, HandoffMode::Auto);
        assert_eq!(refund.priority, Priority::Normal);
        assert_eq!(refund.skill, "billing");
        let human = file.get("human_agent").unwrap();
        assert_eq!(human.skill, "general");
        assert_eq!(human.handoff, HandoffMode::Always);
        assert_eq!(file.out_of_scope.len(), 1);
        assert!(file.warnings.is_empty(), "{:?}", file.warnings);
    }

    #[test]
    fn a_thin_intent_trains_with_a_warning_naming_it_and_its_line() {
        let one = GOOD.replace(
            "[refund please, money back, return my money, I want a refund, get my cash back]",
            "[refund please]",
        );
        let file = IntentsFile::parse(one.as_bytes(), "k/intents.yaml").unwrap();
        assert_eq!(file.get("refund").unwrap().examples, ["refund please"]);
        assert_eq!(file.warnings.len(), 1, "{:?}", file.warnings);
        let warning = &file.warnings[0];
        assert_eq!(warning.kind, WarningKind::ThinIntent);
        assert_eq!(warning.line, Some(3));
        let shown = warning.display("k/intents.yaml");
        assert!(
            shown.starts_with("k/intents.yaml line 3:")
                && shown.contains("\"refund\" has 1 example;"),
            "{shown}"
        );
    }

    #[test]
    fn an_intent_with_only_a_description_learns_from_it() {
        let text = "intents:\n  - name: a\n    description: wants a refund\n    examples: []\n  - name: b\n    examples: [hello]\n";
        let file = IntentsFile::parse(text.as_bytes(), "intents.yaml").unwrap();
        assert_eq!(file.get("a").unwrap().examples, ["wants a refund"]);
        let kinds: Vec<WarningKind> = file.warnings.iter().map(|w| w.kind).collect();
        assert_eq!(
            kinds,
            [WarningKind::DescriptionOnly, WarningKind::ThinIntent]
        );
    }

    #[test]
    fn duplicates_and_conflicts_are_reported_at_their_own_line_and_resolved() {
        let text = "\
intents:
  - name: refund
    examples:
      - money back
      - refund please
      - Money  back
  - name: human_agent
    examples:
      - real person
      - refund please
out_of_scope:
  - real person
  - the weather
";
        let file = IntentsFile::parse(text.as_bytes(), "intents.yaml").unwrap();
        assert_eq!(
            file.get("refund").unwrap().examples,
            ["money back", "refund please"]
        );
        assert_eq!(file.get("human_agent").unwrap().examples, ["real person"]);
        assert_eq!(file.out_of_scope, ["the weather"]);
        let found: Vec<(WarningKind, Option<usize>)> =
            file.warnings.iter().map(|w| (w.kind, w.line)).collect();
        assert!(
            found.contains(&(WarningKind::DuplicateExample, Some(6))),
            "{found:?}"
        );
        assert!(
            found.contains(&(WarningKind::ConflictingExample, Some(10))),
            "{found:?}"
        );
        assert!(
            found.contains(&(WarningKind::OutOfScopeConflict, Some(12))),
            "{found:?}"
        );
        let conflict = file
            .warnings
            .iter()
            .find(|w| w.kind == WarningKind::ConflictingExample)
            .unwrap();
        assert!(
            conflict.message.contains("\"refund\"") && conflict.message.contains("\"human_agent\""),
            "{}",
            conflict.message
        );
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let duplicate = GOOD.replace("name: human_agent", "name: refund");
        let err = IntentsFile::parse(duplicate.as_bytes(), "intents.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("defined twice"), "{err}");

        let unknown_field = GOOD.replace("skill: billing", "skil: billing");
        let err = IntentsFile::parse(unknown_field.as_bytes(), "intents.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line") && err.contains("skil"), "{err}");

        let bad_priority = GOOD.replace("priority: high", "priority: asap");
        let err = IntentsFile::parse(bad_priority.as_bytes(), "intents.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("asap"), "{err}");

        let nothing = GOOD.replace(
            "examples: [refund please, money back, return my money, I want a refund, get my cash back]",
            "examples: []",
        );
        let err = IntentsFile::parse(nothing.as_bytes(), "k/intents.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("k/intents.yaml line 3") && err.contains("no examples"),
            "{err}"
        );

        let err = IntentsFile::parse(b"intents: [", "intents.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("intents.yaml"), "{err}");
    }
}

/// `IntentsFile::parse` against mutated and arbitrary files: an error naming the file, or a file
/// that keeps every promise training relies on.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::test_support::{mutated, noise};

    const DEMO: &[u8] = include_bytes!("../../knowledge/intents.yaml");

    fn check(bytes: &[u8]) {
        match IntentsFile::parse(bytes, "intents.yaml") {
            Ok(file) => {
                assert!(file.intents.len() >= 2);
                let mut names = HashSet::new();
                let mut owner = HashMap::new();
                for intent in &file.intents {
                    assert!(!intent.name.trim().is_empty());
                    assert!(
                        names.insert(intent.name.trim().to_string()),
                        "{}",
                        intent.name
                    );
                    assert!(!intent.skill.trim().is_empty());
                    assert!(
                        !intent.examples.is_empty(),
                        "{} has no example",
                        intent.name
                    );
                    for example in &intent.examples {
                        assert!(!example.trim().is_empty());
                        let previous = owner.insert(normalise_example(example), &intent.name);
                        assert!(
                            previous.is_none() || previous == Some(&intent.name),
                            "{example:?} trains two intents"
                        );
                    }
                }
                for example in &file.out_of_scope {
                    assert!(!owner.contains_key(&normalise_example(example)));
                }
            }
            Err(err) => assert!(err.to_string().starts_with("intents.yaml"), "{err}"),
        }
    }

    /// Found by `generated_files_keep_their_invariants`: two description-only intents with one
    /// description used to train the same text under both names.
    #[test]
    fn a_description_that_trains_another_intent_is_refused() {
        let yaml = "intents:\n  - name: a\n    description: money back\n    examples: []\n  - name: b\n    description: Money  back\n    examples: []\n";
        let err = IntentsFile::parse(yaml.as_bytes(), "intents.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("also an example of \"a\""), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn mutated_intent_files_parse_or_fail_cleanly(bytes in mutated(DEMO)) {
            check(&bytes);
        }

        #[test]
        fn arbitrary_bytes_parse_or_fail_cleanly(bytes in noise(2048)) {
            check(&bytes);
        }

        #[test]
        fn generated_files_keep_their_invariants(
            intents in prop::collection::vec(
                (
                    "[a-z_]{0,8}",
                    prop::collection::vec("[a-zA-Z ,.!?]{0,20}", 0..6),
                    prop::option::of("[a-z ]{0,20}"),
                ),
                0..6,
            ),
            out_of_scope in prop::collection::vec("[a-zA-Z ]{0,20}", 0..4),
        ) {
            let intents: Vec<serde_json::Value> = intents
                .into_iter()
                .map(|(name, examples, description)| {
                    serde_json::json!({"name": name, "examples": examples, "description": description})
                })
                .collect();
            let yaml = serde_yaml::to_string(
                &serde_json::json!({"intents": intents, "out_of_scope": out_of_scope}),
            )
            .unwrap();
            check(yaml.as_bytes());
        }
    }
}
