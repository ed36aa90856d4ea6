//! The insights page: one self-contained HTML file (inline CSS and SVG, no script, nothing
//! fetched), readable offline and printable. The trend chart is drawn by `plotters`' SVG
//! backend.

use super::figures::{Insights, TrendPoint};
use crate::domain::escape_html;
use crate::domain::IssueKind;
use chrono::Duration;
use plotters::prelude::*;
use std::fmt::Write;

/// A kind's label on the page.
pub(crate) fn kind_label(kind: &str) -> &str {
    match kind {
        "vulnerable_app" => "Vulnerable app",
        "os_out_of_date" => "OS out of date",
        "security_patch_out_of_date" => "Security patch out of date",
        "agent_out_of_date" => "Lookout agent out of date",
        other => other,
    }
}

/// `▲ +3`, `▼ −2`, `= 0`: for open issues, down is better.
pub(crate) fn trend_arrow(change: i64) -> &'static str {
    match change {
        c if c > 0 => "▲",
        c if c < 0 => "▼",
        _ => "=",
    }
}

fn signed(change: i64) -> String {
    if change > 0 {
        format!("+{change}")
    } else {
        change.to_string()
    }
}

fn days(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| {
        if v.fract() == 0.0 {
            format!("{v:.0} d")
        } else {
            format!("{v:.1} d")
        }
    })
}

fn percent(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{v:.0} %"))
}

fn one_decimal(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{v:.1}"))
}

const SERIES_COLOURS: [RGBColor; 5] = [
    RGBColor(33, 33, 33),
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

/// The trend chart as an inline SVG element (total and one line per kind).
fn trend_svg(trend: &[TrendPoint]) -> Result<String, String> {
    let (Some(first), Some(last)) = (trend.first(), trend.last()) else {
        return Ok(String::new());
    };
    let start = first.as_of;
    let span = (last.as_of - start).num_days().max(1);
    let top = trend.iter().map(|p| p.open).max().unwrap_or(0).max(4);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 340)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .margin(14)
            .x_label_area_size(32)
            .y_label_area_size(44)
            .build_cartesian_2d(0i64..span, 0u32..(top + top / 8 + 1))
            .map_err(|e| e.to_string())?;
        let label_day = |d: &i64| (start + Duration::days(*d)).format("%d %b").to_string();
        chart
            .configure_mesh()
            .x_labels(8)
            .y_labels(6)
            .x_label_formatter(&label_day)
            .y_desc("open issues")
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| e.to_string())?;
        let mut series: Vec<(String, Vec<(i64, u32)>)> = vec![(
            "All kinds".into(),
            trend
                .iter()
                .map(|p| ((p.as_of - start).num_days(), p.open))
                .collect(),
        )];
        for kind in IssueKind::ALL {
            let points: Vec<(i64, u32)> = trend
                .iter()
                .map(|p| {
                    (
                        (p.as_of - start).num_days(),
                        p.by_kind.get(kind.as_str()).copied().unwrap_or(0),
                    )
                })
                .collect();
            if points.iter().any(|(_, n)| *n > 0) {
                series.push((kind_label(kind.as_str()).to_string(), points));
            }
        }
        for (i, (name, points)) in series.into_iter().enumerate() {
            let colour = SERIES_COLOURS[i % SERIES_COLOURS.len()];
            let width = if i == 0 { 3 } else { 2 };
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(width)))
                .map_err(|e| e.to_string())?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(width))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#212121;max-width:1000px}
h1{font-size:1.5em;margin:0 0 4px}h2{font-size:1.15em;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#616161;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ddd;border-radius:8px;padding:10px 14px;min-width:150px;flex:1}
.card .v{font-size:1.8em;font-weight:600}.card .l{color:#616161;font-size:.9em}
.up{color:#c62828}.down{color:#2e7d32}.flat{color:#616161}
table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eee}th{background:#fafafa}
td.n,th.n{text-align:right}
svg{max-width:100%;height:auto}
.empty{color:#757575;font-style:italic}
@media print{body{margin:0}.card{break-inside:avoid}}
";

/// Renders the page. `generated` is shown as the time of writing (the caller's clock).
pub fn render_html(insights: &Insights, generated: &str) -> String {
    let h = &insights.headline;
    let mut out = String::new();
    let as_of = insights
        .as_of
        .map_or("no run recorded yet".to_string(), |d| d.to_string());
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Lookout reminders: fleet insights {as_of}</title><style>{STYLE}</style></head><body>\
         <h1>Is the fleet getting safer?</h1>\
         <p class=\"sub\">Latest run {as_of}; period from {since}; generated {generated}</p>",
        as_of = escape_html(&as_of),
        since = insights.since,
        generated = escape_html(generated),
    );

    out.push_str("<div class=\"cards\">");
    let change_card = |label: &str, change: Option<i64>, then: Option<u32>| -> String {
        match (change, then) {
            (Some(c), Some(then)) => {
                let class = match c {
                    c if c > 0 => "up",
                    c if c < 0 => "down",
                    _ => "flat",
                };
                format!(
                    "<div class=\"card\"><div class=\"v {class}\">{} {}</div><div class=\"l\">{} (was {then})</div></div>",
                    trend_arrow(c),
                    signed(c),
                    escape_html(label)
                )
            }
            _ => format!(
                "<div class=\"card\"><div class=\"v flat\">–</div><div class=\"l\">{} (not enough history)</div></div>",
                escape_html(label)
            ),
        }
    };
    let _ = write!(
        out,
        "<div class=\"card\"><div class=\"v\">{}</div><div class=\"l\">open issues now</div></div>",
        h.open_now.map_or("–".into(), |v| v.to_string())
    );
    out.push_str(&change_card(
        "vs 7 days ago",
        h.change_7_days,
        h.open_7_days_ago,
    ));
    out.push_str(&change_card(
        "vs 30 days ago",
        h.change_30_days,
        h.open_30_days_ago,
    ));
    let _ = write!(
        out,
        "<div class=\"card\"><div class=\"v\">{}</div><div class=\"l\">overdue now</div></div>",
        h.overdue_now.map_or("–".into(), |v| v.to_string())
    );
    out.push_str("</div><div class=\"cards\" style=\"margin-top:12px\">");
    for (value, label) in [
        (days(h.median_days_to_remediate), "median time to remediate"),
        (
            h.p90_days_to_remediate
                .map_or("–".into(), |v| format!("{v} d")),
            "90th percentile time to remediate",
        ),
        (
            percent(h.fixed_before_deadline_pct),
            "fixed before the deadline",
        ),
        (one_decimal(h.reminders_per_fix), "reminders per fix"),
    ] {
        let _ = write!(
            out,
            "<div class=\"card\"><div class=\"v\">{}</div><div class=\"l\">{}</div></div>",
            escape_html(&value),
            escape_html(label)
        );
    }
    out.push_str("</div>");
    let _ = write!(
        out,
        "<p class=\"sub\">{} issues resolved in the period, {} of them after an escalation.</p>",
        h.resolved, h.fixed_after_escalation
    );

    out.push_str("<h2>Time to remediate by kind</h2><table><tr><th>Kind</th><th class=\"n\">Open now</th><th class=\"n\">Resolved</th><th class=\"n\">Median</th><th class=\"n\">90th pct</th><th class=\"n\">Before deadline</th><th class=\"n\">Reminders per fix</th></tr>");
    for k in &insights.by_kind {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape_html(kind_label(&k.kind)),
            k.open_now,
            k.resolved,
            days(k.median_days_to_remediate),
            k.p90_days_to_remediate.map_or("–".into(), |v| format!("{v} d")),
            percent(k.fixed_before_deadline_pct),
            one_decimal(k.reminders_per_fix),
        );
    }
    out.push_str("</table>");

    out.push_str("<h2>Open issues over the period</h2>");
    match trend_svg(&insights.trend) {
        Ok(svg) if !svg.is_empty() => {
            out.push_str("<figure style=\"margin:0\">");
            out.push_str(&svg);
            out.push_str("</figure>");
        }
        Ok(_) => out.push_str("<p class=\"empty\">No run recorded in the period yet.</p>"),
        Err(e) => {
            let _ = write!(
                out,
                "<p class=\"empty\">The chart could not be drawn: {}</p>",
                escape_html(&e)
            );
        }
    }

    out.push_str("<h2>Since the previous run</h2>");
    match &insights.changes {
        Some(c) => {
            let _ = write!(
                out,
                "<ul><li>{} → {}: open issues {} {}, overdue {} {}</li><li>{} issues resolved, {} owners reached</li>",
                c.previous_as_of,
                c.as_of,
                trend_arrow(c.open),
                signed(c.open),
                trend_arrow(c.overdue),
                signed(c.overdue),
                c.resolved,
                c.owners_reached
            );
            for (kind, delta) in c.by_kind.iter().filter(|(_, d)| **d != 0) {
                let _ = write!(
                    out,
                    "<li>{}: {} {}</li>",
                    escape_html(kind_label(kind)),
                    trend_arrow(*delta),
                    signed(*delta)
                );
            }
            out.push_str("</ul>");
        }
        None => out.push_str("<p class=\"empty\">Only one run recorded so far.</p>"),
    }

    let _ = write!(
        out,
        "<h2>Overdue issues, worst first ({})</h2>",
        insights.overdue.len()
    );
    if insights.overdue.is_empty() {
        out.push_str("<p class=\"empty\">None.</p>");
    } else {
        out.push_str("<table><tr><th>Owner</th><th>Device</th><th>Kind</th><th>Issue</th><th>Risk</th><th>Deadline</th><th class=\"n\">Days overdue</th></tr>");
        for l in &insights.overdue {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
                escape_html(&l.owner),
                escape_html(&l.device_model),
                escape_html(&l.platform),
                escape_html(kind_label(&l.kind)),
                escape_html(&l.issue),
                escape_html(&l.risk),
                l.deadline,
                l.days_overdue
            );
        }
        out.push_str("</table>");
    }

    let _ = write!(
        out,
        "<h2>Owners no channel could reach ({})</h2>",
        insights.unreachable.len()
    );
    if insights.unreachable.is_empty() {
        out.push_str("<p class=\"empty\">None in the latest run.</p>");
    } else {
        out.push_str("<table><tr><th>Owner</th><th>Channel</th><th>Why</th><th class=\"n\">Open issues</th></tr>");
        for u in &insights.unreachable {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
                escape_html(&u.owner),
                escape_html(&u.channel),
                escape_html(&u.reason),
                u.issues
            );
        }
        out.push_str("</table>");
    }
    out.push_str("<p class=\"sub\" style=\"margin-top:24px\">Open issues: active issues of a remindable kind in the latest export. Time to remediate: days from detection to the day the issue left the export (or its resolved date). Owners are shown as pseudonyms unless the report was made in verbose mode.</p>");
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_export_is_escaped() {
        assert_eq!(
            escape_html("<script>\"a\"&'b'</script>"),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn an_empty_history_renders_a_page_without_a_chart() {
        let i = Insights::compute(&[], None, "2026-01-01".parse().unwrap(), false);
        let page = render_html(&i, "now");
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(!page.contains("<svg"));
        assert!(page.contains("No run recorded in the period yet."));
    }
}
