//! `baton eval retrieval`: ingest a knowledge base through the normal path (loader, chunking,
//! embedding, index) into a scratch data directory, run every query through the retriever the
//! server uses, and score document-level rankings.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::app::Components;
use crate::config::Settings;
use crate::knowledge::retrieval::Retriever;
use crate::tools::eval::{percent, progress_bar, resolve_data, write_json, EvalError};

mod page;

/// Rankings are scored to this depth (recall@10, MRR@10, nDCG@10).
const DEPTH: usize = 10;

#[derive(Debug, Args)]
pub struct RetrievalArgs {
    /// The StackFAQ folder (stackExchange-FAQ.json), or a folder with knowledge/ and queries.jsonl
    /// of {"query", "relevant": [document ids or source paths]}.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Dense retrieval only (no keyword fusion), to see what the fusion adds.
    #[arg(long)]
    pub dense_only: bool,
    /// Index into this Qdrant server (gRPC address, e.g. http://127.0.0.1:6334) instead of Qdrant
    /// Edge, in a scratch collection dropped afterwards: the same figures are expected.
    #[arg(long)]
    pub qdrant_url: Option<String>,
}

/// A query and the documents (ids or sources) that answer it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    pub query: String,
    pub relevant: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Miss {
    pub query: String,
    pub relevant: Vec<String>,
    /// Rank of the first relevant document (1-based), if within the depth.
    pub rank: Option<usize>,
    /// The top three documents returned, by source.
    pub top: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RetrievalReport {
    /// "retrieval", for `baton eval compare`.
    pub kind: &'static str,
    pub data: String,
    pub documents: usize,
    pub chunks: usize,
    pub queries: usize,
    /// "qdrant-edge" or "qdrant-server".
    pub index: &'static str,
    pub hybrid: bool,
    pub recall_at_1: f64,
    pub recall_at_3: f64,
    pub recall_at_5: f64,
    pub recall_at_10: f64,
    pub mrr: f64,
    pub ndcg_at_10: f64,
    pub misses: Vec<Miss>,
}

pub async fn run(settings: &Settings, args: RetrievalArgs) -> Result<(), EvalError> {
    let path = resolve_data(settings, &args.data)?;
    let scratch = tempfile::tempdir().map_err(EvalError::pipeline)?;
    let (knowledge_dir, queries) = prepare(&path, scratch.path())?;
    let mut settings = settings.clone();
    if let Some(url) = &args.qdrant_url {
        settings.index.url = Some(url.clone());
        settings.index.collection = format!("baton_eval_{}", uuid::Uuid::new_v4().simple());
    }
    let report = evaluate(
        &settings,
        &knowledge_dir,
        &queries,
        scratch.path(),
        !args.dense_only,
        &path,
    )
    .await;
    if args.qdrant_url.is_some() {
        drop_scratch_collection(&settings).await;
    }
    let report = report?;
    print_summary(&report);
    if let Some(json) = &args.json {
        write_json(json, &report)?;
    }
    if let Some(html) = &args.html {
        crate::tools::eval::report::write_html(html, &page::retrieval_page(&report))?;
    }
    Ok(())
}

/// Best effort: a scratch collection left behind is harmless but wastes the server's memory.
async fn drop_scratch_collection(settings: &Settings) {
    let Some(server) = settings.index.server() else {
        return;
    };
    if let Err(err) = crate::index::server::QdrantServerIndex::drop_collection(&server).await {
        tracing::warn!(collection = %server.collection, error = %err, "scratch collection not dropped");
    }
}

/// The knowledge folder and queries for a data set: StackFAQ is turned into an FAQ file (one
/// entry per thread: its question, and its answers as the answer) under `scratch`.
pub fn prepare(path: &Path, scratch: &Path) -> Result<(PathBuf, Vec<Query>), EvalError> {
    let stackfaq = if path.is_dir() {
        path.join("stackExchange-FAQ.json")
    } else {
        path.to_path_buf()
    };
    if stackfaq.is_file() {
        return prepare_stackfaq(&stackfaq, scratch);
    }
    let knowledge = path.join("knowledge");
    let queries_path = path.join("queries.jsonl");
    if !knowledge.is_dir() || !queries_path.is_file() {
        return Err(EvalError::data(
            path,
            None,
            "expected stackExchange-FAQ.json, or a knowledge/ folder with queries.jsonl beside it",
        ));
    }
    let text = std::fs::read_to_string(&queries_path)
        .map_err(|e| EvalError::data(&queries_path, None, e.to_string()))?;
    let mut queries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let query: Query = serde_json::from_str(line).map_err(|e| {
            EvalError::data(
                &queries_path,
                Some(index + 1),
                format!("expected {{\"query\", \"relevant\": [...]}}: {e}"),
            )
        })?;
        if query.query.trim().is_empty() || query.relevant.is_empty() {
            return Err(EvalError::data(
                &queries_path,
                Some(index + 1),
                "query and relevant must not be empty",
            ));
        }
        queries.push(query);
    }
    if queries.is_empty() {
        return Err(EvalError::data(&queries_path, None, "no queries"));
    }
    Ok((knowledge, queries))
}

fn prepare_stackfaq(path: &Path, scratch: &Path) -> Result<(PathBuf, Vec<Query>), EvalError> {
    #[derive(Deserialize)]
    struct Root {
        root: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        qapair: Vec<Thread>,
    }
    /// The data has a single string where a thread has one answer or paraphrase.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Option<String>),
        Many(Vec<Option<String>>),
    }
    impl OneOrMany {
        fn into_vec(self) -> Vec<String> {
            match self {
                OneOrMany::One(one) => one.into_iter().collect(),
                OneOrMany::Many(many) => many.into_iter().flatten().collect(),
            }
        }
    }
    #[derive(Deserialize)]
    struct Thread {
        question: String,
        answer: OneOrMany,
        #[serde(default = "no_paraphrases")]
        rephr: OneOrMany,
    }
    fn no_paraphrases() -> OneOrMany {
        OneOrMany::Many(Vec::new())
    }
    #[derive(Serialize)]
    struct Entry {
        question: String,
        answer: String,
    }
    let bytes = std::fs::read(path).map_err(|e| EvalError::data(path, None, e.to_string()))?;
    let root: Root = serde_json::from_slice(&bytes).map_err(|e| {
        EvalError::data(
            path,
            Some(e.line()),
            format!("expected StackFAQ JSON (root.qapair): {e}"),
        )
    })?;
    let threads = root.root.qapair;
    let mut entries = Vec::new();
    let mut queries = Vec::new();
    for thread in threads {
        let answer = thread.answer.into_vec();
        let answers: Vec<&str> = answer
            .iter()
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
            .collect();
        if thread.question.trim().is_empty() || answers.is_empty() {
            continue;
        }
        let question = thread.question.trim().to_string();
        entries.push(Entry {
            question: question.clone(),
            answer: answers.join("\n\n"),
        });
        for paraphrase in thread.rephr.into_vec() {
            let paraphrase = paraphrase.trim();
            if paraphrase.is_empty() || paraphrase == "*" {
                continue;
            }
            // FAQ chunks carry their question; relevance is by the thread's question.
            queries.push(Query {
                query: paraphrase.to_string(),
                relevant: vec![format!("question:{question}")],
            });
        }
    }
    let knowledge = scratch.join("knowledge");
    std::fs::create_dir_all(&knowledge).map_err(EvalError::pipeline)?;
    let yaml = serde_yaml::to_string(&entries).map_err(EvalError::pipeline)?;
    std::fs::write(knowledge.join("stackfaq.faq.yaml"), yaml).map_err(EvalError::pipeline)?;
    Ok((knowledge, queries))
}

pub async fn evaluate(
    settings: &Settings,
    knowledge_dir: &Path,
    queries: &[Query],
    scratch: &Path,
    hybrid: bool,
    data_path: &Path,
) -> Result<RetrievalReport, EvalError> {
    let mut settings = settings.clone();
    settings.paths.data = scratch.join("data");
    settings.paths.knowledge = knowledge_dir.to_path_buf();
    settings.database.url = None;
    settings.retrieval.hybrid = hybrid;
    let components = Components::open(settings)
        .await
        .map_err(EvalError::pipeline)?;
    let report = components
        .knowledge
        .sync_folder(knowledge_dir)
        .await
        .map_err(EvalError::pipeline)?;
    if let Some((source, reason)) = report.failed.first() {
        return Err(EvalError::data(
            &knowledge_dir.join(source),
            None,
            reason.clone(),
        ));
    }
    let documents = components
        .knowledge
        .list()
        .await
        .map_err(EvalError::pipeline)?;
    let chunks: i64 = documents.iter().map(|d| d.chunk_count).sum();
    let retriever = Retriever::new(
        components.index.clone(),
        components.settings.retrieval.clone(),
    );

    let bar = progress_bar(queries.len() as u64, "queries");
    let texts: Vec<String> = queries.iter().map(|q| q.query.clone()).collect();
    let mut embeddings = Vec::with_capacity(texts.len());
    for batch in texts.chunks(256) {
        embeddings.extend(
            components
                .encoder
                .embed_many(batch.to_vec())
                .await
                .map_err(EvalError::pipeline)?,
        );
    }
    let mut ranks: Vec<Option<usize>> = Vec::with_capacity(queries.len());
    let mut ndcg_sum = 0.0;
    let mut misses = Vec::new();
    for (query, embedding) in queries.iter().zip(&embeddings) {
        // Ask for extra chunks so DEPTH distinct documents remain after de-duplication.
        let hits = retriever
            .search_top(&query.query, embedding, DEPTH * 3)
            .await
            .map_err(EvalError::pipeline)?;
        let relevant: HashSet<&str> = query.relevant.iter().map(String::as_str).collect();
        let mut seen = HashSet::new();
        let mut ranked: Vec<(String, bool)> = Vec::new();
        for hit in &hits {
            // A document is identified by its FAQ question (StackFAQ threads), else its id.
            let key = match &hit.chunk.question {
                Some(question) => format!("question:{question}"),
                None => hit.chunk.document_id.clone(),
            };
            if !seen.insert(key.clone()) {
                continue;
            }
            let is_relevant = relevant.contains(key.as_str())
                || relevant.contains(hit.chunk.document_id.as_str())
                || relevant.contains(hit.chunk.source.as_str());
            ranked.push((
                if hit.chunk.question.is_some() {
                    key
                } else {
                    hit.chunk.source.clone()
                },
                is_relevant,
            ));
            if ranked.len() == DEPTH {
                break;
            }
        }
        let rank = ranked.iter().position(|(_, r)| *r).map(|p| p + 1);
        let dcg: f64 = ranked
            .iter()
            .enumerate()
            .filter(|(_, (_, r))| *r)
            .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
            .sum();
        let ideal: f64 = (0..relevant.len().min(DEPTH))
            .map(|i| 1.0 / ((i + 2) as f64).log2())
            .sum();
        ndcg_sum += if ideal > 0.0 { dcg / ideal } else { 0.0 };
        if rank != Some(1) {
            misses.push(Miss {
                query: query.query.clone(),
                relevant: query.relevant.clone(),
                rank,
                top: ranked.iter().take(3).map(|(key, _)| key.clone()).collect(),
            });
        }
        ranks.push(rank);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let n = queries.len().max(1) as f64;
    let recall_at =
        |k: usize| ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count() as f64 / n;
    let mrr = ranks
        .iter()
        .map(|r| r.map(|r| 1.0 / r as f64).unwrap_or(0.0))
        .sum::<f64>()
        / n;
    let mut counts: HashMap<Option<usize>, usize> = HashMap::new();
    for rank in &ranks {
        *counts.entry(*rank).or_default() += 1;
    }
    Ok(RetrievalReport {
        kind: "retrieval",
        data: data_path.display().to_string(),
        documents: documents.len(),
        chunks: chunks as usize,
        queries: queries.len(),
        index: if components.settings.index.url.is_some() {
            "qdrant-server"
        } else {
            "qdrant-edge"
        },
        hybrid,
        recall_at_1: recall_at(1),
        recall_at_3: recall_at(3),
        recall_at_5: recall_at(5),
        recall_at_10: recall_at(10),
        mrr,
        ndcg_at_10: ndcg_sum / n,
        misses,
    })
}

fn print_summary(report: &RetrievalReport) {
    println!("retrieval evaluation on {}", report.data);
    println!(
        "  {} documents, {} chunks, {} queries ({}, {})",
        report.documents,
        report.chunks,
        report.queries,
        report.index,
        if report.hybrid {
            "dense + keyword fusion"
        } else {
            "dense only"
        }
    );
    println!(
        "  recall@1 {}  recall@3 {}  recall@5 {}  recall@10 {}",
        percent(report.recall_at_1),
        percent(report.recall_at_3),
        percent(report.recall_at_5),
        percent(report.recall_at_10)
    );
    println!(
        "  MRR@10 {:.4}  nDCG@10 {:.4}",
        report.mrr, report.ndcg_at_10
    );
    println!(
        "  {} queries not answered by the first result; a few:",
        report.misses.len()
    );
    for miss in report.misses.iter().take(5) {
        println!(
            "    {:?} (rank {}) -> {}",
            miss.query,
            miss.rank
                .map(|r| r.to_string())
                .unwrap_or_else(|| ">10".into()),
            miss.top.first().cloned().unwrap_or_default()
        );
    }
}
