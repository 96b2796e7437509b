//! The script format of `baton eval conversations`, parsed with seeds that carry the catalog, so
//! that every check runs while the parser still knows where the value is (serde_yaml attaches the
//! position to errors raised there): a misspelt intent, source, decision or reason is an error
//! with the file and line.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use super::{Catalog, Conversation, ScriptedTurn};
use crate::bot::policy::{DecisionKind, Reason};
use crate::tools::eval::EvalError;

/// Parse and check one script file. Errors name the file and the line of the offending value.
pub fn parse_script(
    text: &str,
    path: &Path,
    catalog: &Catalog,
) -> Result<Vec<Conversation>, EvalError> {
    let file = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    if text.trim().is_empty() {
        return Err(EvalError::data(path, None, "empty script file"));
    }
    let seed = FileSeed {
        catalog,
        file: &file,
        names: &RefCell::new(BTreeSet::new()),
    };
    seed.deserialize(serde_yaml::Deserializer::from_str(text))
        .map_err(|e| {
            EvalError::data(
                path,
                e.location().map(|l| l.line()),
                without_position(&e.to_string()),
            )
        })
}

/// serde_yaml ends its messages with " at line L column C"; the file:line prefix already says
/// where, so drop it. Syntax errors that mention a second position ("..., while parsing a block
/// mapping at line 3 column 1") are kept whole: the context helps.
pub(super) fn without_position(message: &str) -> String {
    if message.matches(" at line ").count() == 1 {
        if let Some(at) = message.rfind(" at line ") {
            let rest = &message[at + " at line ".len()..];
            let mut words = rest.split(' ');
            let is_position = matches!(
                (words.next(), words.next(), words.next(), words.next()),
                (Some(line), Some("column"), Some(column), None)
                    if line.parse::<usize>().is_ok() && column.parse::<usize>().is_ok()
            );
            if is_position {
                return message[..at].to_string();
            }
        }
    }
    message.to_string()
}

const FILE_FIELDS: &[&str] = &["conversations"];
const CONVERSATION_FIELDS: &[&str] = &["name", "note", "turns"];
const TURN_FIELDS: &[&str] = &["say", "expect", "intent", "source", "reasons", "note"];

#[derive(Clone, Copy)]
struct FileSeed<'a> {
    catalog: &'a Catalog,
    file: &'a str,
    /// Names seen so far in this file (they must be unique).
    names: &'a RefCell<BTreeSet<String>>,
}

impl<'de> DeserializeSeed<'de> for FileSeed<'_> {
    type Value = Vec<Conversation>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FileSeed<'_> {
    type Value = Vec<Conversation>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping with a `conversations` list")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut conversations = None;
        while let Some(key) = map.next_key_seed(Checked(FieldName(FILE_FIELDS)))? {
            match key {
                "conversations" => {
                    conversations = Some(map.next_value_seed(ListSeed(ConversationSeed(self)))?)
                }
                other => return Err(de::Error::unknown_field(other, FILE_FIELDS)),
            }
        }
        let conversations: Vec<Conversation> =
            conversations.ok_or_else(|| de::Error::missing_field("conversations"))?;
        if conversations.is_empty() {
            return Err(de::Error::custom("`conversations` is empty"));
        }
        Ok(conversations)
    }
}

#[derive(Clone, Copy)]
struct ConversationSeed<'a>(FileSeed<'a>);

impl<'de> DeserializeSeed<'de> for ConversationSeed<'_> {
    type Value = Conversation;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ConversationSeed<'_> {
    type Value = Conversation;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a conversation: a mapping with `name` and `turns`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut name: Option<String> = None;
        let mut turns = None;
        while let Some(key) = map.next_key_seed(Checked(FieldName(CONVERSATION_FIELDS)))? {
            match key {
                "name" => name = Some(map.next_value()?),
                "note" => {
                    map.next_value::<String>()?;
                }
                "turns" => turns = Some(map.next_value_seed(ListSeed(TurnSeed(self.0.catalog)))?),
                other => return Err(de::Error::unknown_field(other, CONVERSATION_FIELDS)),
            }
        }
        let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
        let name = name.trim().to_string();
        if name.is_empty() {
            return Err(de::Error::custom("`name` is empty"));
        }
        if !self.0.names.borrow_mut().insert(name.clone()) {
            return Err(de::Error::custom(format!(
                "two conversations are named {name:?}"
            )));
        }
        let turns: Vec<ScriptedTurn> = turns.ok_or_else(|| de::Error::missing_field("turns"))?;
        if turns.is_empty() {
            return Err(de::Error::custom(format!(
                "conversation {name:?} has no turns"
            )));
        }
        Ok(Conversation {
            file: self.0.file.to_string(),
            name,
            turns,
        })
    }
}

#[derive(Clone, Copy)]
struct TurnSeed<'a>(&'a Catalog);

impl<'de> DeserializeSeed<'de> for TurnSeed<'_> {
    type Value = ScriptedTurn;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TurnSeed<'_> {
    type Value = ScriptedTurn;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a turn: a mapping with `say` and `expect`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let catalog = self.0;
        let mut say: Option<String> = None;
        let mut expect = None;
        let mut intent = None;
        let mut sources = Vec::new();
        let mut reasons = Vec::new();
        let mut note = None;
        while let Some(key) = map.next_key_seed(Checked(FieldName(TURN_FIELDS)))? {
            match key {
                "say" => say = Some(map.next_value()?),
                "expect" => expect = Some(map.next_value_seed(OneOrMany(Checked(DecisionName)))?),
                "intent" => intent = Some(map.next_value_seed(Checked(IntentName(catalog)))?),
                "source" => {
                    sources = map.next_value_seed(OneOrMany(Checked(SourcePath(catalog))))?
                }
                "reasons" => reasons = map.next_value_seed(OneOrMany(Checked(ReasonName)))?,
                "note" => note = Some(map.next_value::<String>()?),
                other => return Err(de::Error::unknown_field(other, TURN_FIELDS)),
            }
        }
        let say = say.ok_or_else(|| de::Error::missing_field("say"))?;
        if say.trim().is_empty() {
            return Err(de::Error::custom("`say` is empty"));
        }
        let expect: Vec<DecisionKind> = expect.ok_or_else(|| de::Error::missing_field("expect"))?;
        if expect.is_empty() {
            return Err(de::Error::custom("`expect` lists no decision"));
        }
        Ok(ScriptedTurn {
            say,
            expect,
            intent,
            sources,
            reasons,
            note,
        })
    }
}

/// A YAML list, each element read with the inner seed.
#[derive(Clone, Copy)]
struct ListSeed<S>(S);

impl<'de, S: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for ListSeed<S> {
    type Value = Vec<S::Value>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, S: DeserializeSeed<'de> + Copy> Visitor<'de> for ListSeed<S> {
    type Value = Vec<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.0)? {
            items.push(item);
        }
        Ok(items)
    }
}

/// One string or a list of strings, each read with the inner seed.
#[derive(Clone, Copy)]
struct OneOrMany<S>(S);

impl<'de, S: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for OneOrMany<S> {
    type Value = Vec<S::Value>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, S: DeserializeSeed<'de> + Copy> Visitor<'de> for OneOrMany<S> {
    type Value = Vec<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a name or a list of names")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(vec![self.0.deserialize(value.into_deserializer())?])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ListSeed(self.0).visit_seq(seq)
    }
}

/// A check (or conversion) of one string value, made into a seed by [`Checked`].
trait StringCheck: Copy {
    type Value;
    const EXPECTING: &'static str;
    fn check(self, value: &str) -> Result<Self::Value, String>;
}

#[derive(Clone, Copy)]
struct Checked<C>(C);

impl<'de, C: StringCheck> DeserializeSeed<'de> for Checked<C> {
    type Value = C::Value;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, C: StringCheck> Visitor<'de> for Checked<C> {
    type Value = C::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(C::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        self.0.check(value.trim()).map_err(E::custom)
    }
}

/// A mapping key that must be one of the format's fields; checked as a value so that the error
/// points at the key's own line.
#[derive(Clone, Copy)]
struct FieldName(&'static [&'static str]);

impl StringCheck for FieldName {
    type Value = &'static str;
    const EXPECTING: &'static str = "a field name";

    fn check(self, value: &str) -> Result<&'static str, String> {
        self.0
            .iter()
            .copied()
            .find(|field| *field == value)
            .ok_or_else(|| {
                let known: Vec<String> = self.0.iter().map(|f| format!("`{f}`")).collect();
                format!(
                    "unknown field `{value}`, expected one of {}",
                    known.join(", ")
                )
            })
    }
}

#[derive(Clone, Copy)]
struct DecisionName;

impl StringCheck for DecisionName {
    type Value = DecisionKind;
    const EXPECTING: &'static str = "answer, clarify or handoff";

    fn check(self, value: &str) -> Result<DecisionKind, String> {
        [
            DecisionKind::Answer,
            DecisionKind::Clarify,
            DecisionKind::Handoff,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == value)
        .ok_or_else(|| format!("unknown decision {value:?}: expected answer, clarify or handoff"))
    }
}

#[derive(Clone, Copy)]
struct ReasonName;

impl StringCheck for ReasonName {
    type Value = Reason;
    const EXPECTING: &'static str = "a decision reason";

    fn check(self, value: &str) -> Result<Reason, String> {
        Reason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == value)
            .ok_or_else(|| {
                let known: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
                format!(
                    "unknown reason {value:?}: expected one of {}",
                    known.join(", ")
                )
            })
    }
}

#[derive(Clone, Copy)]
struct IntentName<'a>(&'a Catalog);

impl StringCheck for IntentName<'_> {
    type Value = String;
    const EXPECTING: &'static str = "an intent name";

    fn check(self, value: &str) -> Result<String, String> {
        if self.0.intents.contains(value) {
            Ok(value.to_string())
        } else {
            Err(format!(
                "unknown intent {value:?}: not in the knowledge folder's intents file"
            ))
        }
    }
}

#[derive(Clone, Copy)]
struct SourcePath<'a>(&'a Catalog);

impl StringCheck for SourcePath<'_> {
    type Value = String;
    const EXPECTING: &'static str = "a knowledge document path";

    fn check(self, value: &str) -> Result<String, String> {
        let source = value.trim_start_matches("./").replace('\\', "/");
        if self.0.sources.contains(&source) {
            Ok(source)
        } else {
            Err(format!(
                "unknown source {value:?}: not a knowledge document (give a path relative to the \
                 knowledge folder, e.g. billing/refunds.md)"
            ))
        }
    }
}
