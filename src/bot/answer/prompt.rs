//! The LLM's instructions, from `prompts/answer.toml`: kept out of code so a business can tune
//! them without a rebuild, and checked at start-up so a typo fails loudly. One file, one section
//! per task: the answer itself (top level), rewriting follow-up questions (`[rewrite]`), and the
//! agent's assistant (`[draft]`, `[summary]`); a task without its section is not asked of the
//! model.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::templates::{placeholders, read_prompt_file, render, TemplateError};

/// What the model is told for one task: a system text, a user template and worked examples.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskPrompt {
    pub system: String,
    pub user: String,
    /// Shown before the real turn as earlier turns: each gives a value for the user template's
    /// placeholders and the `answer` the model should have given.
    #[serde(default, rename = "example")]
    pub examples: Vec<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AnswerPrompt {
    /// The word the model answers with when the passages do not answer the question.
    pub decline_marker: String,
    pub answer: TaskPrompt,
    pub rewrite: Option<TaskPrompt>,
    pub draft: Option<TaskPrompt>,
    pub summary: Option<TaskPrompt>,
}

/// The file as written: the answer's own fields at the top level.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptFile {
    decline_marker: String,
    system: String,
    user: String,
    #[serde(default, rename = "example")]
    examples: Vec<BTreeMap<String, String>>,
    /// A follow-up question rewritten to stand alone, before retrieval.
    #[serde(default)]
    pub rewrite: Option<TaskPrompt>,
    /// A reply drafted for the agent who took the conversation.
    #[serde(default)]
    pub draft: Option<TaskPrompt>,
    /// The handoff summarised for the agent.
    #[serde(default)]
    pub summary: Option<TaskPrompt>,
}

/// One filled-in exchange for the model: the system text, the worked examples as (user,
/// assistant) turns, and the real turn.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptTurns {
    pub system: String,
    pub examples: Vec<(String, String)>,
    pub user: String,
}

impl TaskPrompt {
    /// Checks the placeholders: `system` may use `system_names`, `user` only `user_names` and
    /// must use `required`.
    fn check(
        &self,
        task: &str,
        system_names: &[&str],
        user_names: &[&str],
        required: &str,
    ) -> Result<(), String> {
        for (part, template, names) in [
            ("system", &self.system, system_names),
            ("user", &self.user, user_names),
        ] {
            if let Some(unknown) = placeholders(template)
                .into_iter()
                .find(|p| !names.contains(p))
            {
                let allowed: Vec<String> = names.iter().map(|n| format!("{{{n}}}")).collect();
                return Err(format!(
                    "{task}{part} uses {{{unknown}}}; it may use {}",
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                ));
            }
        }
        if !placeholders(&self.user).contains(&required) {
            return Err(format!("{task}user must contain {{{required}}}"));
        }
        for (index, example) in self.examples.iter().enumerate() {
            if !example.contains_key("answer") {
                return Err(format!("{task}example {} has no `answer`", index + 1));
            }
            if let Some(unknown) = example
                .keys()
                .find(|key| *key != "answer" && !user_names.contains(&key.as_str()))
            {
                return Err(format!(
                    "{task}example {} has `{unknown}`, which user does not use",
                    index + 1
                ));
            }
        }
        Ok(())
    }

    /// The turns for `values` (placeholder, text); `system_values` fill the system text.
    pub fn turns(&self, system_values: &[(&str, &str)], values: &[(&str, &str)]) -> PromptTurns {
        let examples = self
            .examples
            .iter()
            .map(|example| {
                let filled: Vec<(&str, &str)> = example
                    .iter()
                    .filter(|(key, _)| *key != "answer")
                    .map(|(key, value)| (key.as_str(), value.as_str()))
                    .collect();
                (
                    render(&self.user, &filled),
                    example.get("answer").cloned().unwrap_or_default(),
                )
            })
            .collect();
        PromptTurns {
            system: render(&self.system, system_values),
            examples,
            user: render(&self.user, values),
        }
    }
}

impl AnswerPrompt {
    pub const FILE: &'static str = "answer.toml";

    pub fn load(dir: &Path) -> Result<Self, TemplateError> {
        let (text, origin) = read_prompt_file(dir, Self::FILE)?;
        Self::parse(&text, &origin)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, TemplateError> {
        let invalid = |reason: String| TemplateError::Invalid {
            path: origin.to_string(),
            reason,
        };
        let file: PromptFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let prompt = Self {
            decline_marker: file.decline_marker,
            answer: TaskPrompt {
                system: file.system,
                user: file.user,
                examples: file.examples,
            },
            rewrite: file.rewrite,
            draft: file.draft,
            summary: file.summary,
        };
        if prompt.decline_marker.trim().is_empty() {
            return Err(invalid("decline_marker must not be empty".into()));
        }
        prompt
            .answer
            .check(
                "",
                &["decline_marker"],
                &["passages", "conversation", "question"],
                "question",
            )
            .map_err(invalid)?;
        let tasks = [
            (
                "rewrite.",
                &prompt.rewrite,
                &["previous", "follow_up"][..],
                "follow_up",
            ),
            (
                "draft.",
                &prompt.draft,
                &["passages", "conversation"][..],
                "conversation",
            ),
            (
                "summary.",
                &prompt.summary,
                &["conversation"][..],
                "conversation",
            ),
        ];
        for (task, section, names, required) in tasks {
            if let Some(section) = section {
                section.check(task, &[], names, required).map_err(invalid)?;
            }
        }
        Ok(prompt)
    }

    /// The answer turns for one question. `passages` and `conversation` are already formatted.
    pub fn answer_turns(&self, passages: &str, conversation: &str, question: &str) -> PromptTurns {
        self.answer.turns(
            &[("decline_marker", &self.decline_marker)],
            &[
                ("passages", passages),
                ("conversation", conversation),
                ("question", question),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_prompt_loads_and_fills_in() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let prompt = AnswerPrompt::load(&dir).unwrap();
        let turns = prompt.answer_turns("[1] Refunds: five days.", "(none)", "how long?");
        assert!(turns.system.contains("NO_ANSWER"));
        assert!(turns.user.contains("[1] Refunds: five days."));
        assert!(turns.user.ends_with("Question: how long?"));
        let (example_user, example_answer) = &turns.examples[0];
        assert!(example_user.contains("When are you open?"));
        assert!(example_answer.contains("[1]"));
        for task in [&prompt.rewrite, &prompt.draft, &prompt.summary] {
            assert!(task.is_some(), "every task has its shipped prompt");
        }
        let rewrite = prompt.rewrite.as_ref().unwrap().turns(
            &[],
            &[
                ("previous", "how do refunds work?"),
                ("follow_up", "and how long?"),
            ],
        );
        assert!(rewrite.user.contains("and how long?"));
    }

    #[test]
    fn a_typo_in_a_placeholder_or_a_missing_question_is_refused() {
        let base = "system = \"s\"\ndecline_marker = \"NO\"\n";
        let refused = |text: String| AnswerPrompt::parse(&text, "t").unwrap_err().to_string();
        let err = refused(format!("{base}user = \"{{pasages}} {{question}}\""));
        assert!(err.contains("{pasages}"), "{err}");
        let err = refused(format!("{base}user = \"{{passages}}\""));
        assert!(err.contains("{question}"), "{err}");
        let err = refused("system = \"s\"\ndecline_marker = \" \"\nuser = \"{question}\"".into());
        assert!(err.contains("decline_marker"), "{err}");
        let err = refused(format!(
            "{base}user = \"{{question}}\"\n[rewrite]\nsystem = \"s\"\nuser = \"{{question}}\""
        ));
        assert!(err.contains("rewrite.user"), "{err}");
        let err = refused(format!(
            "{base}user = \"{{question}}\"\n[[example]]\nquestion = \"q\"\n"
        ));
        assert!(err.contains("has no `answer`"), "{err}");
    }
}
