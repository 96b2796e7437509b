//! The texts the bot says, from `prompts/replies.toml`. Kept out of code so a business can change
//! its voice without a rebuild; checked at start-up so a typo fails loudly, not mid-conversation.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Templates {
    pub clarify_articles: String,
    pub clarify_intents: String,
    pub clarify_rephrase: String,
    pub handoff_explicit_request: String,
    pub handoff_intent_requires_human: String,
    pub handoff_out_of_scope: String,
    pub handoff_repeated_failure: String,
    pub handoff_frustration: String,
    pub handoff_default: String,
    pub answer_source: String,
    pub agent_joined: String,
    pub agent_left: String,
    pub transferred: String,
    pub reassigning: String,
    pub offline: String,
    pub outside_hours: String,
    pub message_left: String,
    pub resolved: String,
    pub handed_back: String,
}

/// Placeholders each template may use.
const PLACEHOLDERS: &[(&str, &[&str])] = &[
    ("clarify_articles", &["topic"]),
    ("clarify_intents", &["first", "second"]),
    ("clarify_rephrase", &[]),
    ("handoff_explicit_request", &["team"]),
    ("handoff_intent_requires_human", &["team"]),
    ("handoff_out_of_scope", &["team"]),
    ("handoff_repeated_failure", &["team"]),
    ("handoff_frustration", &["team"]),
    ("handoff_default", &["team"]),
    ("answer_source", &["title"]),
    ("agent_joined", &["agent"]),
    ("agent_left", &["agent"]),
    ("transferred", &["team"]),
    ("reassigning", &["team"]),
    ("offline", &["team"]),
    ("outside_hours", &["team"]),
    ("message_left", &["email"]),
    ("resolved", &[]),
    ("handed_back", &[]),
];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read templates {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("templates {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// The text of `dir/file` and the path to name it by in errors.
pub fn read_prompt_file(dir: &Path, file: &str) -> Result<(String, String), TemplateError> {
    let path = dir.join(file);
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| TemplateError::Io {
        path: origin.clone(),
        source,
    })?;
    Ok((text, origin))
}

impl Templates {
    pub fn load(dir: &Path) -> Result<Self, TemplateError> {
        let (text, origin) = read_prompt_file(dir, "replies.toml")?;
        Self::parse(&text, &origin)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, TemplateError> {
        let invalid = |reason: String| TemplateError::Invalid {
            path: origin.to_string(),
            reason,
        };
        let templates: Templates = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let table: HashMap<String, String> =
            toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        for (name, allowed) in PLACEHOLDERS {
            let template = table.get(*name).map(String::as_str).unwrap_or_default();
            for placeholder in placeholders(template) {
                if !allowed.contains(&placeholder) {
                    return Err(invalid(format!(
                        "{name} uses {{{placeholder}}}; it may use {}",
                        if allowed.is_empty() {
                            "no placeholders".to_string()
                        } else {
                            allowed.join(", ")
                        }
                    )));
                }
            }
        }
        Ok(templates)
    }
}

/// Fill `{name}` placeholders. Unknown names were rejected at load time; missing values render empty.
pub fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                let name = &rest[start + 1..start + end];
                if let Some((_, value)) = values.iter().find(|(key, _)| *key == name) {
                    out.push_str(value);
                }
                rest = &rest[start + end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

pub fn placeholders(template: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        match rest[start..].find('}') {
            Some(end) => {
                names.push(&rest[start + 1..start + end]);
                rest = &rest[start + end + 1..];
            }
            None => break,
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_templates_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let templates = Templates::load(&dir).unwrap();
        assert!(render(&templates.handoff_default, &[("team", "billing")]).contains("billing"));
    }

    #[test]
    fn render_fills_known_placeholders() {
        assert_eq!(render("Hi {name}, {x}!", &[("name", "Ana")]), "Hi Ana, !");
        assert_eq!(render("no braces", &[]), "no braces");
        assert_eq!(render("dangling {", &[]), "dangling {");
    }

    #[test]
    fn unknown_placeholder_or_missing_template_is_rejected() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let good = std::fs::read_to_string(dir.join("replies.toml")).unwrap();
        let bad = good.replace("{team} team now", "{tem} team now");
        let err = Templates::parse(&bad, "replies.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("{tem}"), "{err}");
        let missing: String = good
            .lines()
            .filter(|l| !l.starts_with("answer_source"))
            .collect::<Vec<_>>()
            .join("\n");
        let err = Templates::parse(&missing, "replies.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("answer_source"), "{err}");
    }
}
