//! The Rust encoder against reference embeddings computed independently (onnxruntime's Python API
//! on the same model file; see models/reference_embeddings.py), for both precisions, and basic
//! semantic sanity.

mod common;

use baton::assets::{EncoderPrecision, ModelFiles};
use baton::nlp::encoder::{cosine, Encoder, EncoderOptions, EncoderPool, EMBEDDING_DIM};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    text: String,
    embedding: Vec<f32>,
}

fn reference(precision: EncoderPrecision) -> Reference {
    let name = match precision {
        EncoderPrecision::Int8 => "encoder_reference_int8.json",
        EncoderPrecision::Fp32 => "encoder_reference_fp32.json",
    };
    let path = common::app::repo().join("tests/fixtures").join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn encoder_with(options: EncoderOptions) -> Encoder {
    let files = ModelFiles::verify(&common::app::repo().join("models"), options.precision)
        .expect("run make models");
    Encoder::load(&files, &options).expect("encoder loads")
}

fn encoder() -> Encoder {
    encoder_with(EncoderOptions::default())
}

fn max_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The default int8 encoder runs every text alone, so a text's embedding is the reference's
/// whatever shares the call (a dynamically quantised model would otherwise pick its scales from
/// the whole batch).
#[test]
fn int8_embeddings_match_the_python_reference_whatever_shares_the_call() {
    let reference = reference(EncoderPrecision::Int8);
    let mut encoder = encoder();
    let texts: Vec<&str> = reference.items.iter().map(|i| i.text.as_str()).collect();
    for item in &reference.items {
        let embedding = encoder.embed(&[item.text.as_str()]).unwrap().remove(0);
        assert_eq!(embedding.len(), EMBEDDING_DIM);
        let difference = max_abs_difference(&embedding, &item.embedding);
        assert!(
            difference < 1e-4,
            "{:?}: max difference {difference}",
            item.text
        );
    }
    let together = encoder.embed(&texts).unwrap();
    let reversed: Vec<&str> = texts.iter().rev().copied().collect();
    let reversed = encoder.embed(&reversed).unwrap();
    for ((embedding, again), item) in together
        .iter()
        .zip(reversed.iter().rev())
        .zip(&reference.items)
    {
        assert!(
            max_abs_difference(embedding, &item.embedding) < 1e-4,
            "{:?}",
            item.text
        );
        assert_eq!(
            embedding, again,
            "{:?}: the same whatever its neighbours",
            item.text
        );
        let norm: f32 = embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}

/// The fp32 encoder batches (padded to the longest, sorted by length) and still matches its
/// reference; the int8 encoder reads every text nearly as the fp32 one does.
#[test]
fn fp32_embeddings_match_their_reference_batched_and_the_int8_ones_are_close() {
    let fp32 = reference(EncoderPrecision::Fp32);
    let int8 = reference(EncoderPrecision::Int8);
    let mut encoder = encoder_with(EncoderOptions {
        precision: EncoderPrecision::Fp32,
        max_batch: 2,
        ..EncoderOptions::default()
    });
    let texts: Vec<&str> = fp32.items.iter().map(|i| i.text.as_str()).collect();
    let batched = encoder.embed(&texts).unwrap();
    for ((embedding, item), int8_item) in batched.iter().zip(&fp32.items).zip(&int8.items) {
        let difference = max_abs_difference(embedding, &item.embedding);
        assert!(
            difference < 1e-4,
            "batched {:?}: max difference {difference}",
            item.text
        );
        let agreement = cosine(embedding, &int8_item.embedding);
        // Seen: 0.966 for the one-word "ok", above 0.98 for the sentences.
        assert!(
            agreement > 0.95,
            "{:?}: int8 against fp32 cosine {agreement}",
            item.text
        );
    }
}

#[test]
fn paraphrases_score_higher_than_unrelated_pairs() {
    let mut encoder = encoder();
    let pairs = [
        (
            "How do I get a refund?",
            "I want my money back",
            "My sensor battery is low",
        ),
        (
            "my wifi keeps dropping",
            "the internet connection is unstable",
            "what does the premium plan cost",
        ),
        (
            "cancel my subscription",
            "I want to stop paying every month",
            "where is my parcel",
        ),
        (
            "talk to a human please",
            "can I speak with a real person",
            "how do I reset my password",
        ),
    ];
    for (anchor, paraphrase, unrelated) in pairs {
        let e = encoder.embed(&[anchor, paraphrase, unrelated]).unwrap();
        let close = cosine(&e[0], &e[1]);
        let far = cosine(&e[0], &e[2]);
        assert!(
            close > far + 0.1,
            "{anchor:?}: paraphrase {close:.3} vs unrelated {far:.3}"
        );
    }
}

#[tokio::test]
async fn the_pool_serves_concurrent_callers_in_order() {
    let pool = common::app::shared_encoder();
    let reference = reference(EncoderPrecision::Int8);
    let jobs = reference.items.iter().map(|item| {
        let pool = pool.clone();
        let text = item.text.clone();
        tokio::spawn(async move { pool.embed(&text).await })
    });
    let results = futures::future::join_all(jobs).await;
    for (result, item) in results.into_iter().zip(&reference.items) {
        let embedding = result.unwrap().unwrap();
        assert!(
            max_abs_difference(&embedding, &item.embedding) < 1e-4,
            "{:?}",
            item.text
        );
    }
    let many: Vec<String> = (0..100).map(|i| format!("message number {i}")).collect();
    let embeddings = pool.embed_many(many.clone()).await.unwrap();
    assert_eq!(embeddings.len(), 100);
    let single = pool.embed(&many[57]).await.unwrap();
    assert!(max_abs_difference(&single, &embeddings[57]) < 1e-4);
}

/// The workers run at the configured niceness (`encoder.nice`), read back from the kernel.
#[cfg(target_os = "linux")]
#[test]
fn the_workers_run_at_the_configured_niceness() {
    let files = ModelFiles::verify(&common::app::repo().join("models"), Default::default())
        .expect("run make models");
    let options = EncoderOptions {
        nice: 7,
        workers: 2,
        ..EncoderOptions::default()
    };
    let pool = EncoderPool::start(&files, &options).expect("encoder starts");
    let threads = pool.worker_thread_ids();
    assert_eq!(threads.len(), 2);
    for thread in threads {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{thread}/stat")).unwrap();
        // Fields after the parenthesised name, which may hold spaces: state is the 3rd field of
        // the line, nice the 19th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        assert_eq!(fields[19 - 3], "7", "thread {thread}: {stat}");
    }
}

/// `analyze_with` hands its follow-up the very features it returns, on an encoder thread; a
/// follow-up that panics does not take the workers with it.
#[tokio::test]
async fn a_follow_up_reads_the_features_on_the_encoder_thread_and_may_panic() {
    let pool = common::app::shared_encoder();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let analysis = pool
        .analyze_with(
            "where is my order",
            Some(Box::new(move |features| {
                let thread = std::thread::current()
                    .name()
                    .unwrap_or_default()
                    .to_string();
                let _ = sender.send((features.clone(), thread));
            })),
        )
        .await
        .unwrap();
    let (features, thread) = receiver.await.unwrap();
    assert_eq!(features, analysis.intent_features);
    assert!(thread.starts_with("baton-encoder-"), "{thread}");
    let plain = pool.analyze("where is my order").await.unwrap();
    assert_eq!(plain.embedding, analysis.embedding);
    assert_eq!(plain.sentiment, analysis.sentiment);
    assert!(analysis.sentiment.is_some());

    // More panicking follow-ups than there are workers: each caller still gets its analysis,
    // and every worker still serves afterwards.
    for _ in 0..4 {
        let (sender, receiver) = tokio::sync::oneshot::channel::<()>();
        pool.analyze_with(
            "hello",
            Some(Box::new(move |_| {
                let _keep_until_the_panic = sender;
                panic!("a follow-up that breaks");
            })),
        )
        .await
        .unwrap();
        assert!(receiver.await.is_err(), "the sender went with the panic");
    }
    let texts: Vec<String> = (0..8).map(|i| format!("still serving {i}")).collect();
    assert_eq!(pool.embed_many(texts).await.unwrap().len(), 8);
}

#[derive(Deserialize)]
struct SentimentReference {
    examples: Vec<SentimentExample>,
}

#[derive(Deserialize)]
struct SentimentExample {
    text: String,
    logits: Vec<f32>,
    label: String,
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// Whether the CPU has VNNI (8-bit dot products into 32 bits). Without it, ONNX Runtime's AVX2
/// kernel for `MatMulInteger` (u8 activations x s8 weights) adds pairs of products into 16 bits
/// with saturation (onnxruntime's reason for `reduce_range`), the likely reason why the same model
/// file, runtime and tokenizer score slightly differently on such a CPU than on the machine the
/// reference was made on.
fn cpu_has_vnni() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| {
            info.split_whitespace()
                .any(|flag| flag == "avx512_vnni" || flag == "avx_vnni")
        })
        .unwrap_or(false)
}

/// By default ONNX Runtime's fusion of each residual `Add` and its `LayerNormalization` is left
/// out (`encoder.fuse_skip_layer_norm`, for speed). That changes both models' outputs by rounding,
/// which the int8 models can carry into the next integer step of a layer's input: measured with
/// ONNX Runtime's Python API, embeddings of short messages within 1e-7, of a 128-token section
/// cosine 0.9977, sentiment probabilities within 1e-3. So here: cosine at least 0.99 (what int8
/// itself costs against fp32), probabilities within 0.01, the same labels. They must not agree
/// bit for bit everywhere, though: that would mean the option no longer reaches ONNX Runtime.
/// The two settings give different embedding identities, so a switch re-embeds the knowledge base.
#[test]
fn leaving_the_skip_layer_norm_fusion_out_moves_outputs_by_rounding_only() {
    assert!(!EncoderOptions::default().fuse_skip_layer_norm);
    let section = "The reset email hasn't arrived\n\
        - Wait 10 minutes and check your spam, junk or promotions folder. The email comes from \
        no-reply@brightloop.example.\n- Check the address. A typo, or a different email than the \
        one you signed up with, means no email is sent. For your security we show the same \
        message whether or not an account exists.\n- Did you sign up with Apple or Google? \
        Accounts created with Sign in with Apple or Sign in with Google have no Brightloop \
        password. Use the same button to sign in instead.";
    let texts = [
        "we got a new router and now the hub shows offline",
        "ok",
        "third time I ask!!! nobody called me back and the heating is still broken",
        section,
    ];
    let all = vec![true; texts.len()];
    let fused_options = EncoderOptions {
        fuse_skip_layer_norm: true,
        ..EncoderOptions::default()
    };
    let apart = encoder().analyze(&texts, &all, &all).unwrap();
    let fused = encoder_with(fused_options.clone())
        .analyze(&texts, &all, &all)
        .unwrap();
    let mut bit_for_bit = true;
    for ((text, apart), fused) in texts.iter().zip(&apart).zip(&fused) {
        for (what, a, f) in [
            ("embedding", &apart.embedding, &fused.embedding),
            (
                "intent features",
                &apart.intent_features,
                &fused.intent_features,
            ),
        ] {
            let similarity = cosine(a, f);
            assert!(similarity >= 0.99, "{text:?}: {what} cosine {similarity}");
            bit_for_bit &= a == f;
        }
        let (a, f) = (
            apart.sentiment.as_ref().expect("sentiment asked for"),
            fused.sentiment.as_ref().expect("sentiment asked for"),
        );
        let (a_scores, f_scores) = (
            [a.negative, a.neutral, a.positive],
            [f.negative, f.neutral, f.positive],
        );
        let difference = max_abs_difference(&a_scores, &f_scores);
        assert!(
            difference < 0.01,
            "{text:?}: sentiment moved by {difference}"
        );
        assert_eq!(a.label(), f.label(), "{text:?}");
    }
    assert!(
        !bit_for_bit,
        "fused and unfused graphs agree bit for bit: is the fusion still left out?"
    );
    let digest = "0123abcd";
    assert_ne!(
        baton::nlp::encoder::embedding_identity(digest, &EncoderOptions::default()),
        baton::nlp::encoder::embedding_identity(digest, &fused_options),
    );
    assert_eq!(
        baton::nlp::encoder::embedding_identity(digest, &fused_options),
        digest,
        "the fused form keeps the plain digest that older indexes recorded"
    );
}

/// The largest probability difference from the reference allowed on a CPU without VNNI. Measured
/// 0.0215 on an AMD EPYC with AVX2 only (TweetEval macro recall 0.7033 there against 0.7044 in the
/// model card); the label must still match.
const NON_VNNI_TOLERANCE: f32 = 0.05;

/// The sentiment model as Baton runs it against the training script's own onnxruntime run
/// (models/sentiment/reference.json, batch 1, truncation at 64): same probabilities within 1e-3
/// (within `NON_VNNI_TOLERANCE` on CPUs without VNNI), same label, whatever else shares the call.
#[test]
fn sentiment_matches_the_training_reference_alone_and_alongside_other_messages() {
    let path = common::app::repo().join("models/sentiment/reference.json");
    let reference: SentimentReference =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert!(reference.examples.len() >= 3);
    let mut encoder = encoder();
    assert!(encoder.has_sentiment(), "models/sentiment is installed");
    let texts: Vec<&str> = reference.examples.iter().map(|e| e.text.as_str()).collect();
    let all = vec![true; texts.len()];
    let together = encoder.analyze(&texts, &all, &all).unwrap();
    let tolerance = if cpu_has_vnni() {
        1e-3
    } else {
        NON_VNNI_TOLERANCE
    };
    let mut largest = 0.0f32;
    for (example, analysis) in reference.examples.iter().zip(&together) {
        let alone = encoder
            .analyze(&[example.text.as_str()], &[true], &[false])
            .unwrap()
            .remove(0)
            .sentiment
            .expect("sentiment asked for");
        let together = analysis.sentiment.as_ref().expect("sentiment asked for");
        let expected = softmax(&example.logits);
        // Each message runs alone whatever shares the call, so both paths agree.
        let got = [alone.negative, alone.neutral, alone.positive];
        let shared = [together.negative, together.neutral, together.positive];
        assert!(
            max_abs_difference(&got, &shared) < 1e-6,
            "{:?}: alone {got:?}, alongside others {shared:?}",
            example.text
        );
        let difference = max_abs_difference(&got, &expected);
        largest = largest.max(difference);
        assert!(
            difference < tolerance,
            "{:?}: {got:?} vs {expected:?} (tolerance {tolerance}, VNNI {})",
            example.text,
            cpu_has_vnni()
        );
        assert_eq!(alone.label(), example.label, "{:?}", example.text);
    }
    eprintln!(
        "sentiment: largest difference from the reference {largest:.5} (VNNI: {})",
        cpu_has_vnni()
    );
}

/// The intent classifier reads the fourth layer's mean beside the embedding: the int8 file has
/// that output, so each text's features are 768 long, unit length, their second half the
/// embedding scaled by 1/sqrt(2), and the first half tells texts apart too. The fp32 file as its
/// package ships it has no such output: its features are the embedding.
#[test]
fn intent_features_read_the_fourth_layer_beside_the_embedding() {
    let texts = ["how do i get a refund", "my sensor won't pair with the hub"];
    let encoded = encoder().encode(&texts).unwrap();
    for text in &encoded {
        assert_eq!(text.intent_features.len(), 2 * EMBEDDING_DIM);
        assert!((cosine(&text.intent_features, &text.intent_features) - 1.0).abs() < 1e-4);
        let scaled: Vec<f32> = text
            .embedding
            .iter()
            .map(|v| v * std::f32::consts::FRAC_1_SQRT_2)
            .collect();
        assert!(max_abs_difference(&text.intent_features[EMBEDDING_DIM..], &scaled) < 1e-6);
    }
    let layer_4 = |i: usize| &encoded[i].intent_features[..EMBEDDING_DIM];
    // Two halves of unit vectors scaled by 1/sqrt(2): a cosine of 0.5 would be the same text.
    assert!(cosine(layer_4(0), layer_4(1)) < 0.45);

    let fp32 = encoder_with(EncoderOptions {
        precision: EncoderPrecision::Fp32,
        ..EncoderOptions::default()
    })
    .encode(&texts[..1])
    .unwrap()
    .remove(0);
    assert_eq!(fp32.intent_features, fp32.embedding);
}
