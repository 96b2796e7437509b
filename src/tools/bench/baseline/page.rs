//! The `--html` page of `baton bench --baseline`: figure cards for the ratios, a table per run,
//! and bars comparing the medians. Self-contained like the evaluation reports (inline CSS and
//! SVG, nothing fetched).

use std::fmt::Write as _;

use super::{BaselineReport, RunFigures};
use crate::tools::eval::report::escape;

const BATON_COLOUR: &str = "#2563eb";
const PYTHON_COLOUR: &str = "#f59e0b";

/// Reads one figure out of a run.
type Pick = fn(&RunFigures) -> f64;

pub fn baseline_page(report: &BaselineReport) -> String {
    let mut html = String::new();
    let ratios = &report.ratios;
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Baton vs the Python service</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#111}}\
         .cards{{display:flex;gap:1rem;flex-wrap:wrap}}.card{{border:1px solid #ddd;border-radius:8px;padding:1rem 1.25rem;min-width:11rem}}\
         .card b{{display:block;font-size:1.8rem}}.good{{color:#15803d}}.bad{{color:#b91c1c}}\
         table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ddd;padding:.3rem .6rem;text-align:right}}\
         th:first-child,td:first-child{{text-align:left}}</style></head><body>\
         <h1>Baton vs the reference Python service</h1>\
         <p>Same model files, same work per message (encoder, sentiment, intent, top-5 retrieval), both over loopback HTTP, \
         runs alternated. Build: {profile}. {runs} runs; {messages} one-client messages and {concurrent} messages at {clients} clients per run.</p>\
         <div class=\"cards\">",
        profile = escape(report.build_profile),
        runs = report.baton.runs.len(),
        messages = report.messages_per_run,
        concurrent = report.concurrent_messages_per_run,
        clients = report.concurrency,
    );
    card(
        &mut html,
        "one-client p50 speed-up (Python / Baton)",
        ratios.one_client_p50_speedup,
        ratios.one_client_p50_speedup > 1.0,
    );
    card(
        &mut html,
        "one-client p99 speed-up",
        ratios.one_client_p99_speedup,
        ratios.one_client_p99_speedup > 1.0,
    );
    card(
        &mut html,
        &format!("throughput at {} clients (goal &ge; 2)", report.concurrency),
        ratios.throughput,
        ratios.throughput >= 2.0,
    );
    card(
        &mut html,
        "memory (Python / Baton)",
        ratios.rss,
        ratios.rss > 1.0,
    );
    card(
        &mut html,
        "Baton understanding / encoder alone (goal &le; 1.3)",
        ratios.understanding_over_encoder,
        ratios.understanding_over_encoder <= 1.3,
    );
    html.push_str("</div>");

    html.push_str("<h2>Medians over runs</h2>");
    let median_of = |runs: &[RunFigures], pick: Pick| {
        let mut values: Vec<f64> = runs.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    let rows: [(&str, Pick, &str); 5] = [
        ("one-client p50", |r| r.one_client.p50_ms, "ms"),
        ("one-client p99", |r| r.one_client.p99_ms, "ms"),
        ("throughput", |r| r.throughput_msg_per_s, "msg/s"),
        ("p99 under load", |r| r.concurrent.p99_ms, "ms"),
        ("resident memory", |r| r.rss_mib, "MiB"),
    ];
    for (label, pick, unit) in rows {
        let baton = median_of(&report.baton.runs, pick);
        let python = median_of(&report.python.runs, pick);
        bars(&mut html, label, unit, baton, python);
    }

    html.push_str("<h2>Every run</h2><table><tr><th>service</th><th>run</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>msg/s</th><th>p50 ms loaded</th><th>p99 ms loaded</th><th>RSS MiB</th><th>peak MiB</th></tr>");
    for service in [&report.baton, &report.python] {
        for run in &service.runs {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.0}</td><td>{:.2}</td><td>{:.2}</td><td>{:.0}</td><td>{:.0}</td></tr>",
                escape(service.name),
                run.run,
                run.one_client.p50_ms,
                run.one_client.p95_ms,
                run.one_client.p99_ms,
                run.throughput_msg_per_s,
                run.concurrent.p50_ms,
                run.concurrent.p99_ms,
                run.rss_mib,
                run.peak_rss_mib,
            );
        }
    }
    let per_run: Vec<String> = report
        .baton
        .runs
        .iter()
        .filter_map(|run| {
            let understanding = run.server_understanding.as_ref()?.p50_ms;
            let encoder = run.encoder_alone.as_ref()?.p50_ms;
            Some(format!(
                "run {}: {understanding:.2} / {encoder:.2} ms",
                run.run
            ))
        })
        .collect();
    let _ = write!(
        html,
        "</table><p>Baton's server-side understanding p50 / its encoder alone p50 (in process, \
         measured just before each of its runs): {}.</p></body></html>",
        per_run.join("; ")
    );
    html
}

fn card(html: &mut String, label: &str, value: f64, good: bool) {
    let _ = write!(
        html,
        "<div class=\"card\"><b class=\"{}\">{value:.2}&times;</b>{label}</div>",
        if good { "good" } else { "bad" }
    );
}

/// Two horizontal bars on one scale: Baton and Python.
fn bars(html: &mut String, label: &str, unit: &str, baton: f64, python: f64) {
    let width = 420.0;
    let largest = baton.max(python).max(f64::MIN_POSITIVE);
    let _ = write!(
        html,
        "<h3>{}</h3><svg width=\"640\" height=\"56\" role=\"img\" aria-label=\"{}\">",
        escape(label),
        escape(label)
    );
    for (row, (name, value, colour)) in [
        ("Baton", baton, BATON_COLOUR),
        ("Python", python, PYTHON_COLOUR),
    ]
    .into_iter()
    .enumerate()
    {
        let y = row as f64 * 26.0 + 2.0;
        let _ = write!(
            html,
            "<text x=\"0\" y=\"{ty}\" font-size=\"13\">{name}</text>\
             <rect x=\"70\" y=\"{y}\" width=\"{w:.1}\" height=\"20\" fill=\"{colour}\"/>\
             <text x=\"{tx:.1}\" y=\"{ty}\" font-size=\"13\">{value:.2} {unit}</text>",
            ty = y + 15.0,
            w = value / largest * width,
            tx = 76.0 + value / largest * width,
            unit = escape(unit),
        );
    }
    html.push_str("</svg>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_larger_value() {
        let mut html = String::new();
        bars(&mut html, "p50 <one>", "ms", 2.0, 4.0);
        assert!(html.contains("width=\"210.0\""), "{html}");
        assert!(html.contains("width=\"420.0\""), "{html}");
        assert!(html.contains("p50 &lt;one&gt;"), "{html}");
    }
}
