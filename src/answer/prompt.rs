//! The LLM's instructions, from `prompts/answer.toml`: kept out of code so a business can tune
//! them without a rebuild, and checked at start-up so a typo fails loudly.

use std::path::Path;

use serde::Deserialize;

use crate::templates::{placeholders, render, TemplateError};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerPrompt {
    pub system: String,
    pub decline_marker: String,
    pub user: String,
    /// Worked examples shown before the real question, as earlier turns.
    #[serde(default, rename = "example")]
    pub examples: Vec<Example>,
}

/// A question with its passages and the answer the model should have given.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    #[serde(default)]
    pub passages: String,
    pub question: String,
    pub answer: String,
}

/// One filled-in exchange for the model: the system text, the worked examples as (user,
/// assistant) turns, and the real question.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptTurns {
    pub system: String,
    pub examples: Vec<(String, String)>,
    pub user: String,
}

impl AnswerPrompt {
    pub const FILE: &'static str = "answer.toml";

    pub fn load(dir: &Path) -> Result<Self, TemplateError> {
        let path = dir.join(Self::FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| TemplateError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, TemplateError> {
        let invalid = |reason: String| TemplateError::Invalid {
            path: origin.to_string(),
            reason,
        };
        let prompt: Self = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let allowed: [(&str, &str, &[&str]); 2] = [
            ("system", &prompt.system, &["decline_marker"]),
            (
                "user",
                &prompt.user,
                &["passages", "conversation", "question"],
            ),
        ];
        for (name, template, names) in allowed {
            if let Some(unknown) = placeholders(template)
                .into_iter()
                .find(|p| !names.contains(p))
            {
                return Err(invalid(format!(
                    "{name} uses {{{unknown}}}; it may use {}",
                    names
                        .iter()
                        .map(|n| format!("{{{n}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        if !placeholders(&prompt.user).contains(&"question") {
            return Err(invalid("user must contain {question}".into()));
        }
        if prompt.decline_marker.trim().is_empty() {
            return Err(invalid("decline_marker must not be empty".into()));
        }
        Ok(prompt)
    }

    /// The turns for one question. `passages` and `conversation` are already formatted.
    pub fn turns(&self, passages: &str, conversation: &str, question: &str) -> PromptTurns {
        let system = render(&self.system, &[("decline_marker", &self.decline_marker)]);
        let examples = self
            .examples
            .iter()
            .map(|example| {
                let user = render(
                    &self.user,
                    &[
                        ("passages", &example.passages),
                        ("conversation", "(none)"),
                        ("question", &example.question),
                    ],
                );
                (user, example.answer.clone())
            })
            .collect();
        let user = render(
            &self.user,
            &[
                ("passages", passages),
                ("conversation", conversation),
                ("question", question),
            ],
        );
        PromptTurns {
            system,
            examples,
            user,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_prompt_loads_and_fills_in() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let prompt = AnswerPrompt::load(&dir).unwrap();
        let turns = prompt.turns("[1] Refunds: five days.", "(none)", "how long?");
        assert!(turns.system.contains("NO_ANSWER"));
        assert!(turns.user.contains("[1] Refunds: five days."));
        assert!(turns.user.ends_with("Question: how long?"));
        let (example_user, example_answer) = &turns.examples[0];
        assert!(example_user.contains("When are you open?"));
        assert!(example_answer.contains("[1]"));
    }

    #[test]
    fn a_typo_in_a_placeholder_or_a_missing_question_is_refused() {
        let base = "system = \"s\"\ndecline_marker = \"NO\"\n";
        let err = AnswerPrompt::parse(&format!("{base}user = \"{{pasages}} {{question}}\""), "t")
            .unwrap_err();
        assert!(err.to_string().contains("{pasages}"), "{err}");
        let err = AnswerPrompt::parse(&format!("{base}user = \"{{passages}}\""), "t").unwrap_err();
        assert!(err.to_string().contains("{question}"), "{err}");
        let err = AnswerPrompt::parse(
            "system = \"s\"\ndecline_marker = \" \"\nuser = \"{question}\"",
            "t",
        )
        .unwrap_err();
        assert!(err.to_string().contains("decline_marker"), "{err}");
    }
}
