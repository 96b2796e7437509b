//! The business's intents (`knowledge/intents.yaml`): parsing and validation. A bad file is
//! rejected with a message that names the file, the line and the problem, before anything is
//! trained on it.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Fewest examples an intent may have: fewer cannot be held out for validation.
pub const MIN_EXAMPLES: usize = 5;

/// Whether a human must, may or must not take over conversations with this intent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
        let line_of = |name: &str| find_line(text, name);

        if file.intents.len() < 2 {
            return Err(invalid(
                None,
                "at least 2 intents are needed to train a classifier".into(),
            ));
        }
        let mut names = HashSet::new();
        let mut examples_seen: std::collections::HashMap<String, &str> =
            std::collections::HashMap::new();
        for intent in &file.intents {
            let name = intent.name.trim();
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
            if !names.insert(name.to_string()) {
                return Err(invalid(
                    line_of(name),
                    format!("intent {name:?} is defined twice"),
                ));
            }
            let examples: Vec<&String> = intent
                .examples
                .iter()
                .filter(|e| !e.trim().is_empty())
                .collect();
            if examples.len() < MIN_EXAMPLES {
                return Err(invalid(
                    line_of(name),
                    format!(
                        "intent {name:?} has {} examples; at least {MIN_EXAMPLES} are needed",
                        examples.len()
                    ),
                ));
            }
            for example in examples {
                let key = example.trim().to_lowercase();
                if let Some(other) = examples_seen.insert(key, name) {
                    if other != name {
                        return Err(invalid(
                            find_line(text, example.trim()),
                            format!(
                                "example {example:?} is listed under both {other:?} and {name:?}"
                            ),
                        ));
                    }
                }
            }
            if intent.skill.trim().is_empty() {
                return Err(invalid(
                    line_of(name),
                    format!("intent {name:?} has an empty skill"),
                ));
            }
            if intent.reply.as_deref().is_some_and(|r| r.trim().is_empty()) {
                return Err(invalid(
                    line_of(name),
                    format!("intent {name:?} has an empty reply"),
                ));
            }
        }
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
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let too_few = GOOD
            .replace(", get my cash back", "")
            .replace(", I want a refund", "");
        let err = IntentsFile::parse(too_few.as_bytes(), "k/intents.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("k/intents.yaml line 3") && err.contains("at least 5"),
            "{err}"
        );

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

        let shared = GOOD.replace("operator", "money back");
        let err = IntentsFile::parse(shared.as_bytes(), "intents.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("both"), "{err}");

        let err = IntentsFile::parse(b"intents: [", "intents.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("intents.yaml"), "{err}");
    }
}
