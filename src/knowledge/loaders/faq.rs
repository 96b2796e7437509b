//! FAQ files (CSV and YAML): one chunk per question and answer, problems reported with lines.

use std::cell::RefCell;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::markdown::yaml_scalar_text;
use super::*;

pub(super) struct FaqEntry {
    pub(super) question: String,
    pub(super) answer: String,
}

pub(super) fn faq_parsed(
    source: &str,
    title: Option<String>,
    url: Option<String>,
    entries: Vec<FaqEntry>,
) -> Parsed {
    Parsed {
        title: title.unwrap_or_else(|| humanised_file_stem(source)),
        url,
        drafts: entries
            .into_iter()
            .map(|entry| ChunkDraft {
                heading_path: Vec::new(),
                text: entry.answer,
                question: Some(entry.question),
            })
            .collect(),
    }
}

/// Trims each line's end and collapses runs of blank lines, keeping the paragraphs and lists of
/// a multi-line answer (YAML `|` blocks, quoted CSV cells).
pub(super) fn tidy_multiline(text: &str) -> String {
    let mut tidy = String::new();
    let mut blank_run = 0;
    for line in text.trim().lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank_run += 1;
            continue;
        }
        if !tidy.is_empty() {
            tidy.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        tidy.push_str(line);
    }
    tidy
}

/// Validates one entry; `Err` carries the reason (the caller adds entry number and line).
pub(super) fn faq_entry(
    question: Option<String>,
    answer: Option<String>,
) -> Result<FaqEntry, &'static str> {
    let question = question
        .map(|q| normalise_whitespace(&q))
        .unwrap_or_default();
    let answer = answer.map(|a| tidy_multiline(&a)).unwrap_or_default();
    match (question.is_empty(), answer.is_empty()) {
        (true, _) => Err("the question is missing or empty"),
        (_, true) => Err("the answer is missing or empty"),
        _ => Ok(FaqEntry { question, answer }),
    }
}

pub(super) fn parse_faq_csv(source: &str, text: &str) -> Result<Parsed, LoadError> {
    let csv_error = |err: csv::Error| {
        let line = err.position().map(|position| position.line() as usize);
        LoadError::parse(source, line, err.to_string())
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        // Short rows get a clear "answer is missing" instead of a field-count error.
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader.headers().map_err(csv_error)?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|header| header.trim().eq_ignore_ascii_case(name))
    };
    let (Some(question_column), Some(answer_column)) = (column("question"), column("answer"))
    else {
        return Err(LoadError::parse(
            source,
            Some(1),
            format!(
                "expected `question` and `answer` header columns, found: {}",
                headers.iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    let mut entries = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let record = record.map_err(csv_error)?;
        let question = record.get(question_column).map(str::to_string);
        let answer = record.get(answer_column).map(str::to_string);
        let blank =
            |cell: &Option<String>| cell.as_deref().is_none_or(|text| text.trim().is_empty());
        if blank(&question) && blank(&answer) {
            continue; // a spacer row such as ",", not a broken entry
        }
        let entry = faq_entry(question, answer).map_err(|reason| {
            let line = record.position().map(|position| position.line() as usize);
            LoadError::parse(source, line, format!("entry {}: {reason}", index + 1))
        })?;
        entries.push(entry);
    }
    Ok(faq_parsed(source, None, None, entries))
}

pub(super) fn parse_faq_yaml(source: &str, text: &str) -> Result<Parsed, LoadError> {
    // serde_yaml reports a comments-only file as a premature end of input, not as no entries.
    let has_content = text.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#')
    });
    if !has_content {
        return Ok(faq_parsed(source, None, None, Vec::new()));
    }
    let problem = RefCell::new(None);
    let file = FaqFileSeed { problem: &problem }
        .deserialize(serde_yaml::Deserializer::from_str(text))
        .map_err(|err| {
            let line = err.location().map(|location| location.line());
            // Our own validation messages are recorded as they are raised, without serde_yaml's
            // path and position decorations; anything else (syntax errors) is passed on as is.
            let reason = problem
                .borrow_mut()
                .take()
                .unwrap_or_else(|| err.to_string());
            LoadError::parse(source, line, reason)
        })?;
    Ok(faq_parsed(source, file.title, file.url, file.entries))
}

#[derive(Default)]
pub(super) struct FaqFile {
    pub(super) title: Option<String>,
    pub(super) url: Option<String>,
    pub(super) entries: Vec<FaqEntry>,
}

/// Where the FAQ deserializers leave a readable reason for the error they raise. serde_yaml adds
/// the line of the node being read to errors raised inside its visitors, which is why validation
/// happens there rather than after deserializing.
pub(super) type ProblemSlot = RefCell<Option<String>>;

pub(super) fn report<E: de::Error>(problem: &ProblemSlot, reason: String) -> E {
    let error = E::custom(&reason);
    *problem.borrow_mut() = Some(reason);
    error
}

pub(super) struct FaqFileSeed<'a> {
    pub(super) problem: &'a ProblemSlot,
}

impl<'de> DeserializeSeed<'de> for FaqFileSeed<'_> {
    type Value = FaqFile;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<FaqFile, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FaqFileSeed<'_> {
    type Value = FaqFile;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter
            .write_str("a list of {question, answer} entries, or a mapping with a `faqs:` list")
    }

    /// A file holding only comments.
    fn visit_unit<E: de::Error>(self) -> Result<FaqFile, E> {
        Ok(FaqFile::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, entries: A) -> Result<FaqFile, A::Error> {
        Ok(FaqFile {
            entries: collect_faq_entries(entries, self.problem)?,
            ..FaqFile::default()
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FaqFile, A::Error> {
        let mut file = FaqFile::default();
        let mut found_list = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "faqs" | "questions" => {
                    if found_list {
                        return Err(report(
                            self.problem,
                            "use either `faqs:` or `questions:`, not both".to_string(),
                        ));
                    }
                    found_list = true;
                    file.entries = map.next_value_seed(FaqListSeed {
                        problem: self.problem,
                    })?;
                }
                "title" => file.title = map.next_value::<Option<String>>()?.and_then(non_empty),
                "url" => file.url = map.next_value::<Option<String>>()?.and_then(non_empty),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !found_list {
            return Err(report(
                self.problem,
                "expected a list of {question, answer} entries, or a `faqs:` (or `questions:`) list"
                    .to_string(),
            ));
        }
        Ok(file)
    }
}

pub(super) struct FaqListSeed<'a> {
    problem: &'a ProblemSlot,
}

impl<'de> DeserializeSeed<'de> for FaqListSeed<'_> {
    type Value = Vec<FaqEntry>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FaqListSeed<'_> {
    type Value = Vec<FaqEntry>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a list of {question, answer} entries")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, entries: A) -> Result<Self::Value, A::Error> {
        collect_faq_entries(entries, self.problem)
    }
}

pub(super) fn collect_faq_entries<'de, A: SeqAccess<'de>>(
    mut entries: A,
    problem: &ProblemSlot,
) -> Result<Vec<FaqEntry>, A::Error> {
    let mut collected = Vec::new();
    while let Some(entry) = entries.next_element_seed(FaqEntrySeed {
        number: collected.len() + 1,
        problem,
    })? {
        collected.push(entry);
    }
    Ok(collected)
}

pub(super) struct FaqEntrySeed<'a> {
    /// 1-based, as people count.
    number: usize,
    problem: &'a ProblemSlot,
}

impl FaqEntrySeed<'_> {
    pub(super) fn not_a_mapping<E: de::Error>(&self) -> E {
        report(
            self.problem,
            format!(
                "entry {}: expected `question:` and `answer:` fields",
                self.number
            ),
        )
    }
}

impl<'de> DeserializeSeed<'de> for FaqEntrySeed<'_> {
    type Value = FaqEntry;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<FaqEntry, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FaqEntrySeed<'_> {
    type Value = FaqEntry;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an FAQ entry with `question` and `answer`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FaqEntry, A::Error> {
        let mut question = None;
        let mut answer = None;
        while let Some(key) = map.next_key::<serde_yaml::Value>()? {
            let key = yaml_scalar_text(&key)
                .unwrap_or_default()
                .to_ascii_lowercase();
            let slot = match key.as_str() {
                "question" => &mut question,
                "answer" => &mut answer,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let value = map.next_value::<serde_yaml::Value>()?;
            let Some(text) = yaml_scalar_text(&value) else {
                return Err(report(
                    self.problem,
                    format!(
                        "entry {}: `{key}` must be text, not a list or mapping",
                        self.number
                    ),
                ));
            };
            *slot = Some(text);
        }
        faq_entry(question, answer)
            .map_err(|reason| report(self.problem, format!("entry {}: {reason}", self.number)))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<FaqEntry, E> {
        Err(self.not_a_mapping())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<FaqEntry, E> {
        Err(self.not_a_mapping())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<FaqEntry, E> {
        Err(self.not_a_mapping())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<FaqEntry, E> {
        Err(self.not_a_mapping())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<FaqEntry, E> {
        Err(self.not_a_mapping())
    }

    fn visit_unit<E: de::Error>(self) -> Result<FaqEntry, E> {
        Err(self.not_a_mapping())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<FaqEntry, A::Error> {
        Err(self.not_a_mapping())
    }
}
