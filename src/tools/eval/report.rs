//! The HTML kit behind `--html OUT.html`: evaluation reports as self-contained pages a person
//! would rather look at than read. Inline CSS and inline SVG drawn here, no scripts, nothing
//! fetched when the page is viewed. Every piece of text from the data (queries, intent names,
//! replies) goes through [`escape`]: the data contains `<`, `&` and quotes.
//!
//! Each report renders its own page from these pieces (`intents/page.rs`, `retrieval/page.rs`,
//! `conversations/page.rs`, `answers.rs`); this file knows no report.

use std::fmt::Write as _;
use std::path::Path;

use crate::tools::eval::EvalError;

/// Escape text for HTML and SVG, in element content and in quoted attributes alike.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

pub fn write_html(path: &Path, html: &str) -> Result<(), EvalError> {
    let write_error = |reason: String| EvalError::Write {
        path: path.display().to_string(),
        reason,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| write_error(e.to_string()))?;
    }
    std::fs::write(path, html).map_err(|e| write_error(e.to_string()))?;
    println!("HTML report written to {}", path.display());
    Ok(())
}

/// FAQ entries are keyed `question:<the question>` in retrieval reports; people want the question.
pub fn document_name(key: &str) -> &str {
    key.strip_prefix("question:").unwrap_or(key)
}

// ------------------------------------------------------------------------------------------------
// Building blocks.

pub const BLUE: &str = "#2f6fdf";
pub const ORANGE: &str = "#e07b22";
pub const GREEN: &str = "#2e9d5b";
pub const AMBER: &str = "#d9a21b";
pub const RED: &str = "#d64545";
pub const INK: &str = "#1d2433";
pub const MUTED: &str = "#8a93a6";

pub fn pct(value: f64) -> String {
    format!("{:.1}%", value * 100.0)
}

pub fn quality_color(value: f64) -> &'static str {
    if value >= 0.9 {
        GREEN
    } else if value >= 0.75 {
        AMBER
    } else {
        RED
    }
}

pub fn card(label: &str, value: &str, hint: &str) -> String {
    format!(
        "<div class=\"card\"><div class=\"value\">{}</div><div class=\"label\">{}</div>\
         <div class=\"hint\">{}</div></div>",
        escape(value),
        escape(label),
        escape(hint)
    )
}

pub fn section_cards(body: &mut String, cards: &[String]) {
    let _ = write!(
        body,
        "<section class=\"cards\">{}</section>",
        cards.join("")
    );
}

/// A small horizontal bar for table cells, `fraction` in [0, 1].
pub fn inline_bar(fraction: f64, color: &str) -> String {
    let width = (fraction.clamp(0.0, 1.0) * 90.0).max(1.0);
    format!(
        "<svg width=\"90\" height=\"10\" role=\"img\"><rect width=\"90\" height=\"10\" \
         rx=\"2\" fill=\"#eef1f6\"/><rect width=\"{width:.1}\" height=\"10\" rx=\"2\" \
         fill=\"{color}\"/></svg>"
    )
}

pub struct Series {
    pub name: &'static str,
    pub color: &'static str,
    /// (x, y) with y in [0, 1].
    pub points: Vec<(f64, f64)>,
}

/// A vertical line across the chart, labelled.
pub struct Marker {
    pub x: f64,
    pub label: String,
    pub color: &'static str,
}

/// Lines over x, with y in [0, 1] shown as percentages.
pub fn line_chart(series: &[Series], markers: &[Marker], x_label: &str) -> String {
    let (width, height) = (900.0, 380.0);
    let (left, right, top, bottom) = (58.0, 24.0, 34.0, 50.0);
    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(markers.iter().map(|m| m.x));
    let (mut x_min, mut x_max) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if !x_min.is_finite() || !x_max.is_finite() || x_max - x_min < 1e-9 {
        (x_min, x_max) = (0.0, 1.0);
    }
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let sx = |x: f64| left + (x - x_min) / (x_max - x_min) * plot_w;
    let sy = |y: f64| top + (1.0 - y.clamp(0.0, 1.0)) * plot_h;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" \
         xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for i in 0..=5 {
        let y = f64::from(i) / 5.0;
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{y1:.1}\" y2=\"{y1:.1}\" class=\"grid\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{:.0}%</text>",
            width - right,
            left - 8.0,
            sy(y) + 4.0,
            y * 100.0,
            y1 = sy(y)
        );
    }
    for i in 0..=5 {
        let x = x_min + (x_max - x_min) * f64::from(i) / 5.0;
        let _ = write!(
            svg,
            "<line x1=\"{x1:.1}\" x2=\"{x1:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" class=\"axis\"/>\
             <text x=\"{x1:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"middle\">{x:.2}</text>",
            top + plot_h,
            top + plot_h + 5.0,
            top + plot_h + 20.0,
            x1 = sx(x)
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"axis\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" class=\"axis-label\" text-anchor=\"middle\">{}</text>",
        width - right,
        left + plot_w / 2.0,
        height - 8.0,
        escape(x_label),
        y = top + plot_h
    );
    // Labels sit at the foot of their line: the rightmost marker's to its right, the others' to
    // their left, so two close markers (chosen and recommended thresholds) don't overprint.
    let mut by_x: Vec<&Marker> = markers.iter().collect();
    by_x.sort_by(|a, b| a.x.total_cmp(&b.x));
    for (index, marker) in by_x.iter().enumerate() {
        let x = sx(marker.x);
        let rightmost = index + 1 == by_x.len();
        let near_right_edge = x > left + plot_w * 0.75;
        let (anchor, dx, row) = if rightmost && !near_right_edge {
            ("start", 6.0, 0.0)
        } else if rightmost {
            ("end", -6.0, 0.0)
        } else {
            ("end", -6.0, if near_right_edge { 1.0 } else { 0.0 })
        };
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top}\" y2=\"{:.1}\" stroke=\"{color}\" \
             stroke-width=\"1.5\" stroke-dasharray=\"5 4\"/><text x=\"{:.1}\" y=\"{:.1}\" \
             class=\"marker\" fill=\"{color}\" text-anchor=\"{anchor}\">{}</text>",
            top + plot_h,
            x + dx,
            top + plot_h - 10.0 - 16.0 * row,
            escape(&marker.label),
            color = marker.color
        );
    }
    for line in series {
        let points: Vec<String> = line
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2.5\" \
             stroke-linejoin=\"round\"/>",
            points.join(" "),
            line.color
        );
        for marker in markers.iter().take(1) {
            if let Some(y) = interpolate(&line.points, marker.x) {
                let _ = write!(
                    svg,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4.5\" fill=\"{}\" stroke=\"white\" \
                     stroke-width=\"1.5\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"value-label\" \
                     fill=\"{}\">{}</text>",
                    sx(marker.x),
                    sy(y),
                    line.color,
                    sx(marker.x) + 8.0,
                    sy(y) - 8.0,
                    line.color,
                    pct(y)
                );
            }
        }
    }
    // Legend, top left inside the plot.
    let mut legend_x = left + 12.0;
    for line in series {
        let _ = write!(
            svg,
            "<rect x=\"{legend_x:.1}\" y=\"{:.1}\" width=\"14\" height=\"4\" rx=\"2\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"legend\">{}</text>",
            top - 20.0,
            line.color,
            legend_x + 20.0,
            top - 14.0,
            escape(line.name)
        );
        legend_x += 30.0 + 7.5 * line.name.len() as f64;
    }
    svg.push_str("</svg>");
    svg
}

/// y at `x` on a polyline sorted by x (None outside it).
pub fn interpolate(points: &[(f64, f64)], x: f64) -> Option<f64> {
    points.windows(2).find_map(|pair| {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        if x >= x0.min(x1) && x <= x0.max(x1) {
            Some(if (x1 - x0).abs() < 1e-12 {
                y0
            } else {
                y0 + (y1 - y0) * (x - x0) / (x1 - x0)
            })
        } else {
            None
        }
    })
}

pub struct Bar {
    pub label: String,
    /// In [0, 1].
    pub value: f64,
    pub text: String,
    pub color: &'static str,
}

/// Horizontal bars, one row each, labels on the left.
pub fn bar_chart(bars: &[Bar]) -> String {
    let (width, row, label_w, text_w) = (900.0, 22.0, 250.0, 190.0);
    let plot_w = width - label_w - text_w;
    let height = row * bars.len() as f64 + 8.0;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" \
         xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for (i, bar) in bars.iter().enumerate() {
        let y = 4.0 + row * i as f64;
        let w = (bar.value.clamp(0.0, 1.0) * plot_w).max(1.5);
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"bar-label\" text-anchor=\"end\">{}</text>\
             <rect x=\"{label_w}\" y=\"{:.1}\" width=\"{plot_w:.1}\" height=\"{:.1}\" rx=\"3\" fill=\"#eef1f6\"/>\
             <rect x=\"{label_w}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" rx=\"3\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"bar-text\">{}</text>",
            label_w - 10.0,
            y + row * 0.62,
            escape(&bar.label),
            y + 3.0,
            row - 6.0,
            y + 3.0,
            row - 6.0,
            bar.color,
            label_w + plot_w + 10.0,
            y + row * 0.62,
            escape(&bar.text)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Vertical columns for a handful of ratios.
pub fn column_chart(columns: &[(&str, f64)]) -> String {
    let (width, height) = (900.0, 300.0);
    let (left, top, bottom) = (58.0, 24.0, 40.0);
    let plot_h = height - top - bottom;
    let slot = (width - left - 20.0) / columns.len().max(1) as f64;
    let sy = |y: f64| top + (1.0 - y.clamp(0.0, 1.0)) * plot_h;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" \
         xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for i in 0..=5 {
        let y = f64::from(i) / 5.0;
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{y1:.1}\" y2=\"{y1:.1}\" class=\"grid\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{:.0}%</text>",
            width - 20.0,
            left - 8.0,
            sy(y) + 4.0,
            y * 100.0,
            y1 = sy(y)
        );
    }
    for (i, (label, value)) in columns.iter().enumerate() {
        let x = left + slot * i as f64 + slot * 0.2;
        let w = slot * 0.6;
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" rx=\"4\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"value-label\" text-anchor=\"middle\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"axis-label\" text-anchor=\"middle\">{}</text>",
            sy(*value),
            (top + plot_h - sy(*value)).max(1.0),
            quality_color(*value),
            x + w / 2.0,
            sy(*value) - 8.0,
            pct(*value),
            x + w / 2.0,
            height - 14.0,
            escape(label)
        );
    }
    svg.push_str("</svg>");
    svg
}

pub fn page(title: &str, subtitle: &str, body: &str) -> String {
    let generated = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Baton · {title}</title><style>{STYLE}</style></head><body><main>\
         <header class=\"top\"><div class=\"brand\">Baton evaluation</div><h1>{title}</h1>\
         <p class=\"subtitle\">{subtitle}</p><p class=\"generated\">generated {generated}</p></header>\
         {body}</main></body></html>\n",
        title = escape(title),
        subtitle = escape(subtitle),
    )
}

pub const STYLE: &str = "
*{box-sizing:border-box}
body{margin:0;background:#f4f6fa;color:#1d2433;font:15px/1.5 -apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:28px 32px 60px}
header.top{margin-bottom:18px}
.brand{font-size:12px;letter-spacing:.12em;text-transform:uppercase;color:#8a93a6;font-weight:600}
h1{margin:2px 0 4px;font-size:30px}
.subtitle{margin:0;color:#4a5368;word-break:break-word}
.generated{margin:2px 0 0;color:#8a93a6;font-size:12px}
h2{font-size:19px;margin:0 0 4px}
h3{font-size:13px;margin:14px 0 6px;color:#4a5368;text-transform:uppercase;letter-spacing:.06em}
section{background:#fff;border-radius:12px;padding:20px 24px;margin:18px 0;box-shadow:0 1px 3px rgba(20,30,60,.08)}
section.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));gap:14px;background:none;box-shadow:none;padding:0}
.card{background:#fff;border-radius:12px;padding:16px 18px;box-shadow:0 1px 3px rgba(20,30,60,.08)}
.card .value{font-size:28px;font-weight:700;letter-spacing:-.01em}
.card .label{font-weight:600;margin-top:2px}
.card .hint{color:#8a93a6;font-size:12px}
p.hint{color:#6b7489;margin:0 0 12px;font-size:13.5px}
svg.chart{width:100%;height:auto;display:block}
svg .grid{stroke:#e6e9f0;stroke-width:1}
svg .axis{stroke:#b9c0ce;stroke-width:1}
svg text{font-family:inherit}
svg .tick{font-size:12px;fill:#6b7489}
svg .axis-label{font-size:13px;fill:#4a5368;font-weight:600}
svg .legend{font-size:13px;fill:#1d2433}
svg .marker{font-size:12.5px;font-weight:600;paint-order:stroke;stroke:#fff;stroke-width:4px}
svg .value-label{font-size:13px;font-weight:700;paint-order:stroke;stroke:#fff;stroke-width:4px}
svg .bar-label{font-size:12.5px;fill:#1d2433}
svg .bar-text{font-size:12px;fill:#4a5368;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 10px;vertical-align:top}
table.list thead th{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#6b7489;border-bottom:1px solid #e6e9f0}
table.list tbody tr:nth-child(even){background:#f8f9fc}
table.small td,table.small th{padding:3px 6px;font-size:13.5px;overflow-wrap:anywhere}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.arrow{color:#8a93a6;width:1%}
td.spark{width:1%}
ol.top{margin:0;padding-left:20px}
ol.top li.relevant{color:#2e7d4f;font-weight:600}
table.misses td{font-size:13.5px}
table.matrix{width:auto;margin-top:6px}
table.matrix th,table.matrix td{padding:12px 22px;text-align:center;border:1px solid #e6e9f0;font-size:16px}
table.matrix td{font-weight:700;min-width:90px;font-variant-numeric:tabular-nums}
table.matrix th.corner{font-size:12px;color:#6b7489;font-weight:500}
table.matrix td.total{color:#6b7489;font-weight:500}
.badge{display:inline-block;padding:1px 8px;border-radius:99px;font-size:12px;font-weight:600}
.badge.bad{background:#fde8e8;color:#b42323}
.badge.warn{background:#fdf3dc;color:#8a6100}
article.mismatch{border:1px solid #e6e9f0;border-radius:10px;padding:14px 16px;margin:14px 0}
article.mismatch header{margin-bottom:8px}
.conv{font-weight:700}
.turn{color:#6b7489;margin-left:6px}
.bubble{border-radius:14px;padding:8px 14px;margin:6px 0;max-width:80%;white-space:pre-wrap;word-break:break-word}
.bubble.customer{background:#2f6fdf;color:#fff;margin-left:auto;width:fit-content}
.bubble.bot{background:#eef1f6;width:fit-content}
.bubble.silent{color:#8a93a6;font-style:italic}
p.note{margin:6px 0;padding:6px 10px;border-left:3px solid #d9a21b;background:#fdf8ea;font-size:13.5px}
.cols{display:grid;grid-template-columns:1.2fr 1fr;gap:20px}
.cols.even{grid-template-columns:1fr 1fr;gap:28px}
.cols>div{min-width:0}
table.checks td,table.checks th{padding:4px 8px;font-size:13.5px;border-bottom:1px solid #f0f2f6}
table.checks thead th{font-size:12px;color:#6b7489;text-transform:uppercase}
table.checks tr.bad td:last-child{color:#b42323;font-weight:600}
table.checks tr.ok td:last-child{color:#2e7d4f}
.scope{font-size:12px;text-transform:none;letter-spacing:0;font-weight:500;margin-left:6px}
.scope.out{color:#b42323}
.scope.in{color:#2e7d4f}
.source{color:#8a93a6;font-size:12px}
.glance{columns:2;column-gap:28px}
.glance-row{display:flex;justify-content:space-between;gap:10px;padding:3px 0;border-bottom:1px solid #f0f2f6;break-inside:avoid;font-size:13.5px}
.glance-name{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.dot{display:inline-block;width:12px;height:12px;border-radius:50%;margin-left:4px;vertical-align:-1px}
.dot.ok{background:#2e9d5b}
.dot.partial{background:#d9a21b}
.dot.wrong{background:#d64545}
.earlier{font-size:13px;color:#6b7489;margin:2px 0}
.earlier .dot{margin:0 6px 0 0;width:9px;height:9px}
.earlier .made{color:#8a93a6}
details{margin-top:8px}
summary{cursor:pointer;color:#4a5368;font-size:13px}
pre{background:#1d2433;color:#e6e9f0;padding:12px;border-radius:8px;overflow:auto;font-size:12px;max-height:360px}
";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<b>"Tom" & 'Jerry'</b>"#),
            "&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;"
        );
        assert_eq!(escape("café £5"), "café £5");
    }

    #[test]
    fn interpolation_reads_between_points() {
        let points = [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)];
        assert_eq!(interpolate(&points, 0.25), Some(0.75));
        assert_eq!(interpolate(&points, 2.0), None);
    }

    /// No raw markup from the data survives, and the page needs nothing from elsewhere: what
    /// every report's page test asks of its page.
    pub(crate) fn assert_safe_and_self_contained(html: &str) {
        assert!(!html.contains("<script"), "unescaped data or a script");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(!html.contains("src=\"http"), "external resource");
        assert!(!html.contains("href=\"http"), "external resource");
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.trim_end().ends_with("</html>"));
    }

    /// Data with markup, quotes and an ampersand, for the page tests.
    pub(crate) const HOSTILE: &str = "<script>alert('x')</script> & \"quoted\"";
}
